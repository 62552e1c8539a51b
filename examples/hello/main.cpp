// hello: a C++ program whose pricing rules live in a Python script.
//
// It embeds modhost, puts the example's scripts/ directory on the module
// path, imports `pricing` and calls it for each order.
#include <pybind11/embed.h>

#include <iostream>

#include "interpreter/interpreter.h"

namespace py = pybind11;

int main(int argc, char** argv) {
  modhost::interpreter_config config;
  config.argv.assign(argv, argv + argc);
  config.module_paths = {argc > 1 ? argv[1] : MODHOST_HELLO_SCRIPTS};
  modhost::interpreter python(config);

  struct order {
    const char* item;
    int quantity;
    double unit_price;
  };
  const order orders[] = {{"widget", 3, 2.50}, {"gadget", 12, 9.99}, {"gizmo", 1, 120.0}};

  return modhost::interpreter::exit_code_of([&] {
    try {
      py::module_ pricing = py::module_::import("pricing");
      std::cout << "modhost " << py::module_::import("modhost").attr("__version__").cast<std::string>()
                << " on Python " << python.info().version << " from " << python.info().home
                << "\npricing rules: " << pricing.attr("__file__").cast<std::string>() << "\n";
      for (const auto& o : orders)
        std::cout << pricing.attr("price")(o.item, o.quantity, o.unit_price).cast<std::string>()
                  << "\n";
    } catch (py::error_already_set& e) {
      e.restore();
      throw modhost::python_error::fetch();
    }
  });
}
