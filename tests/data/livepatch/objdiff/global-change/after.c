int seq_printf(void *m, const char *fmt, ...);
int cmdline_show(void *m, void *v)
{
	seq_printf(m, "%s\n", "this has been live patched");
	return 0;
}
int untouched(int x) { return x + 1; }
