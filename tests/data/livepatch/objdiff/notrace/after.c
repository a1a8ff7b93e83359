int bump(int);
__attribute__((no_instrument_function)) int fast_path(int x) { return bump(x) + 2; }
