/* Stands in for a livepatch .ko in the bundle tests: an ET_REL object with a .modinfo. */
__attribute__((section(".modinfo"), used)) static const char modinfo[] =
	"name=lp_test\0vermagic=6.12.117 SMP mod_unload \0livepatch=Y";
int lp_test_marker(void) { return 42; }
