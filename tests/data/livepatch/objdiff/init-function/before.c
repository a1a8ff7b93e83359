int bump(int);
__attribute__((section(".init.text"))) int setup_thing(void) { return bump(1); }
