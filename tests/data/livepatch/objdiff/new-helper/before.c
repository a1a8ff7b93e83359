int bump(int);
int work(int x) { return bump(x) + 1; }
