int threshold = 32;
int over(int x) { return x > threshold; }
