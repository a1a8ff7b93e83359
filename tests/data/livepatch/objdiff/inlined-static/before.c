static int limit = 10;
int bump(int);
static inline int clamp(int x) { return x > limit ? limit : x; }
int caller_a(int x) { return clamp(x) + bump(x); }
int caller_b(int x) { return bump(x) * 2; }
void set_limit(int l) { limit = l; }
