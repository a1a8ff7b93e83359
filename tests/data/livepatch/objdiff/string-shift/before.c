int pr(const char *s);
int first(void) { return pr("alpha"); }
int second(void) { return pr("beta"); }
