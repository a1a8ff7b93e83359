/* The patched translation unit of the extract/klp-convert unit test. */
struct seq_file;
extern int seq_puts(struct seq_file *m, const char *s);	/* exported by "vmlinux" */
extern char *saved_command_line;			/* global, not exported */
static int counter;					/* static data: never copied */

static __attribute__((noipa)) int helper(struct seq_file *m)	/* static, in "vmlinux" */
{
	counter++;
	return seq_puts(m, saved_command_line);
}

static __attribute__((noipa)) int tiny(struct seq_file *m)	/* inlined away in "vmlinux" */
{
	return seq_puts(m, " [tiny]");
}

static __attribute__((noipa)) int new_helper(struct seq_file *m)	/* added by the patch */
{
	return seq_puts(m, " [patched]") + tiny(m);
}

int show(struct seq_file *m, void *v)				/* changed */
{
	helper(m);
	seq_puts(m, saved_command_line);
	return new_helper(m) + counter;
}

int untouched(void) { return counter; }
