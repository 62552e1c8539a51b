// detail::bytecode_imports — the import statements a module's code contains,
// read from its bytecode in C++.
//
// The import hook learns what a module imports from the code object the
// import system executes (the "exec" audit event), so nothing public has to
// be replaced: IMPORT_NAME with the LOAD_CONSTs before it (level, fromlist)
// and the IMPORT_FROM / STORE_* pairs after it (`from m import LIMIT as CAP`).
// Module-level code and class bodies count (their statements run while the
// module is imported); function bodies do not. No `dis`: this runs for every
// module imported, and dis.get_instructions was most of the cost of imports.
//
// The same scan gives a deep reload the names a module's statements bind
// (names_bound_by), read for every deep reload of every module.
#pragma once

#include <Python.h>

#include <string>
#include <utility>
#include <vector>

namespace modhost::detail {

struct import_statement {
  std::string module;  // as written: "" for `from . import x`
  long level = 0;      // leading dots
  bool has_fromlist = false;
  std::vector<std::string> fromlist;                       // the names after `import` ("*" for a star)
  std::vector<std::pair<std::string, std::string>> bound;  // (name, bound_as) the statement stores
};

// The opcode numbers the scan needs, from the `opcode` module of the running
// interpreter (they change between versions).
struct bytecode_opcodes {
  int import_name = -1, import_from = -1, load_const = -1, extended_arg = -1;
  int store_name = -1, store_global = -1, delete_name = -1, delete_global = -1, setup_annotations = -1;
  // Name reads; -1 where the version has no such opcode (LOAD_METHOD went
  // into LOAD_ATTR in 3.12, LOAD_FROM_DICT_OR_GLOBALS came in 3.12).
  int load_name = -1, load_global = -1, load_attr = -1, load_method = -1, load_from_dict_or_globals = -1;
  // LOAD_SMALL_INT (3.14): an int 0-255 is the argument itself, not in
  // co_consts (an import's level, `LIMIT = 3`); -1 before 3.14.
  int load_small_int = -1;
  // Since 3.15 (PEP 810, lazy imports) IMPORT_NAME's argument is the name's
  // index shifted left by 2, the low bits saying lazy or eager.
  int import_name_shift = 0;
  // This version's numbers (CPython's opcode.h).
  static bytecode_opcodes load();
};

// The import statements of `code` (a code object) and of the class bodies
// nested in it, in bytecode order. Needs the GIL; never raises (a code
// object it cannot read yields what was read so far).
std::vector<import_statement> imports_of(const bytecode_opcodes& ops, PyObject* code);

// The names `code`'s own statements bind in its module. top_level: what the
// module's top-level statements assign, import or delete (STORE_NAME and
// friends), plus __annotations__ when it has annotations (since 3.14 the
// module binds __annotate__, and __annotations__ is computed from it). in_functions: what
// its functions and class bodies assign through a `global` statement.
// `from x import *` is not counted: those names are x's. Needs the GIL.
struct bound_names {
  std::vector<std::string> top_level, in_functions;
};
bound_names names_bound_by(const bytecode_opcodes& ops, PyObject* code);

// The names `code`'s top-level statements read: global and local names and
// attribute names (`a.CONST` reads "a" and "CONST"), in the module's code,
// its class bodies and its comprehensions (they run at import), not in its
// functions or lambdas (they run when called). Attribute names are not tied
// to the object they are read from: a dependent reload asks "may this
// module's top level have read CONST", and a yes that is wrong only costs a
// re-run. Needs the GIL.
std::vector<std::string> names_read_at_top_level(const bytecode_opcodes& ops, PyObject* code);

// The `name = constant` statements of a class body (`code` itself, not what
// it nests), names bound more than once left out: (name, the constant,
// borrowed from the code's co_consts, or an immortal small int). Needs the GIL.
std::vector<std::pair<std::string, PyObject*>> constants_bound_by(const bytecode_opcodes& ops, PyObject* code);

}  // namespace modhost::detail
