int bump(int);
int count_calls(int x) { static int calls; calls++; return bump(x) + calls; }
