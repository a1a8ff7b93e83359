int pr(const char *s);
int first(void) { return pr("alpha, but longer"); }
int second(void) { return pr("beta"); }
