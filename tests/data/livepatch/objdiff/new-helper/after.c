int bump(int);
static __attribute__((noinline)) int twice(int x) { return bump(x) + bump(x + 1); }
int work(int x) { return twice(x) + 1; }
