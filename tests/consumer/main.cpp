#include <iostream>

#include <modhost/modhost.h>

int main() {
  modhost::interpreter python;
  return modhost::interpreter::exit_code_of([] {
    modhost::interpreter::current()->run_string(
        "import modhost, os\n"
        "assert os.__file__.startswith(modhost.interpreter_info()['home'])\n"
        "print(f'consumer: modhost {modhost.__version__} ok')\n");
  });
}
