int bump(int);
int count_calls(int x) { return bump(x); }
