// flushbench: the command-line front end (being built; see issues).
#include <cstdio>
int main() {
    std::puts("flushbench: under construction");
    return 2;
}
