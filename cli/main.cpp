#include "commands.hpp"

int main(int argc, char** argv) { return zctl::cli::run(argc, argv); }
