int threshold = 64;
int over(int x) { return x > threshold; }
