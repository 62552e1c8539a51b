#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/bytecode_imports.h"

#include <opcode.h>  // not part of Python.h

#include <algorithm>
#include <set>

#include "modules/cpython/reference.h"

namespace py = pybind11;

namespace modhost::detail {

// CPython's own numbers for this version (opcode_ids.h since 3.13), known at
// build time: importing the `opcode` module at start-up took a millisecond.
bytecode_opcodes bytecode_opcodes::load() {
  bytecode_opcodes ops;
  ops.import_name = IMPORT_NAME;
  ops.import_from = IMPORT_FROM;
  ops.load_const = LOAD_CONST;
  ops.extended_arg = EXTENDED_ARG;
  ops.store_name = STORE_NAME;
  ops.store_global = STORE_GLOBAL;
  ops.delete_name = DELETE_NAME;
  ops.delete_global = DELETE_GLOBAL;
  ops.setup_annotations = SETUP_ANNOTATIONS;
  ops.load_name = LOAD_NAME;
  ops.load_global = LOAD_GLOBAL;
  ops.load_attr = LOAD_ATTR;
  // Real instructions only: since 3.12 the header also numbers
  // pseudo-instructions (LOAD_METHOD among them) from 256, which never
  // appear in co_code.
#if defined(LOAD_METHOD) && LOAD_METHOD < 256
  ops.load_method = LOAD_METHOD;
#endif
#ifdef LOAD_FROM_DICT_OR_GLOBALS
  ops.load_from_dict_or_globals = LOAD_FROM_DICT_OR_GLOBALS;
#endif
#ifdef LOAD_SMALL_INT
  ops.load_small_int = LOAD_SMALL_INT;
#endif
  ops.import_name_shift = PY_VERSION_HEX >= 0x030F0000 ? 2 : 0;
  return ops;
}

namespace {

// One instruction with its full argument (EXTENDED_ARG prefixes folded in).
struct instruction {
  int opcode;
  unsigned long arg;
};

// The instructions of `code`, without the inline CACHE units (opcode 0 in
// 3.11-3.13) and EXTENDED_ARG prefixes.
std::vector<instruction> decode(const bytecode_opcodes& ops, PyCodeObject* code) {
  std::vector<instruction> out;
  py::object owned = steal(PyCode_GetCode(code));  // new reference: the unspecialized bytecode
  PyObject* bytes = owned.ptr();
  if (!bytes) {
    PyErr_Clear();
    return out;
  }
  const auto* units = reinterpret_cast<const unsigned char*>(PyBytes_AS_STRING(bytes));
  Py_ssize_t size = PyBytes_GET_SIZE(bytes);
  out.reserve(static_cast<std::size_t>(size / 4));
  unsigned long extended = 0;
  for (Py_ssize_t i = 0; i + 1 < size; i += 2) {
    int op = units[i];
    unsigned long arg = units[i + 1] | extended;
    if (op == 0) continue;  // CACHE
    if (op == ops.extended_arg) {
      extended = arg << 8;
      continue;
    }
    extended = 0;
    out.push_back({op, arg});
  }
  return out;
}

std::string utf8_of(PyObject* text) {
  if (!text || !PyUnicode_Check(text)) return {};
  Py_ssize_t size = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(text, &size);
  if (!utf8) {
    PyErr_Clear();
    return {};
  }
  return std::string(utf8, static_cast<std::size_t>(size));
}

PyObject* tuple_item(PyObject* tuple, unsigned long index) {  // borrowed, or null
  if (!tuple || !PyTuple_Check(tuple) || index >= static_cast<unsigned long>(PyTuple_GET_SIZE(tuple))) return nullptr;
  return PyTuple_GET_ITEM(tuple, static_cast<Py_ssize_t>(index));
}

void scan(const bytecode_opcodes& ops, PyCodeObject* code, std::vector<import_statement>& out, int depth) {
  std::vector<instruction> code_units = decode(ops, code);
  PyObject* names = code->co_names;    // borrowed: the code keeps them
  PyObject* consts = code->co_consts;  // borrowed
  for (std::size_t k = 0; k < code_units.size(); ++k) {
    if (code_units[k].opcode != ops.import_name) continue;
    import_statement statement;
    statement.module = utf8_of(tuple_item(names, code_units[k].arg >> ops.import_name_shift));
    // LOAD_CONST level (3.14: LOAD_SMALL_INT level); LOAD_CONST fromlist; IMPORT_NAME name
    const int level_op = k >= 2 ? code_units[k - 2].opcode : -1;
    if (k >= 2 && code_units[k - 1].opcode == ops.load_const &&
        (level_op == ops.load_const || level_op == ops.load_small_int)) {
      PyObject* fromlist = tuple_item(consts, code_units[k - 1].arg);
      if (level_op == ops.load_small_int) {
        statement.level = static_cast<long>(code_units[k - 2].arg);
      } else if (PyObject* level = tuple_item(consts, code_units[k - 2].arg); level && PyLong_Check(level)) {
        statement.level = PyLong_AsLong(level);
      }
      if (fromlist && PyTuple_Check(fromlist)) {
        statement.has_fromlist = true;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(fromlist); ++i)
          statement.fromlist.push_back(utf8_of(PyTuple_GET_ITEM(fromlist, i)));
      }
    }
    if (PyErr_Occurred()) PyErr_Clear();
    // IMPORT_FROM name; STORE_* bound_as — once per name of a from-import.
    for (std::size_t j = k + 1; statement.has_fromlist && j + 1 < code_units.size(); j += 2) {
      const instruction& from = code_units[j];
      const instruction& store = code_units[j + 1];
      if (from.opcode != ops.import_from) break;
      if (store.opcode != ops.store_name && store.opcode != ops.store_global) break;
      statement.bound.emplace_back(utf8_of(tuple_item(names, from.arg)), utf8_of(tuple_item(names, store.arg)));
    }
    out.push_back(std::move(statement));
  }
  // Class bodies run at import; functions (CO_OPTIMIZED) run when called.
  if (depth > 64 || !consts || !PyTuple_Check(consts)) return;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); ++i) {
    PyObject* item = PyTuple_GET_ITEM(consts, i);
    if (PyCode_Check(item) && !(reinterpret_cast<PyCodeObject*>(item)->co_flags & CO_OPTIMIZED))
      scan(ops, reinterpret_cast<PyCodeObject*>(item), out, depth + 1);
  }
}

void collect_bound_names(const bytecode_opcodes& ops, PyCodeObject* code, bool is_module, bound_names& out,
                         int depth) {
  PyObject* names = code->co_names;  // borrowed: the code keeps them
  for (const instruction& unit : decode(ops, code)) {
    if (unit.opcode == ops.store_global || unit.opcode == ops.delete_global) {
      (is_module ? out.top_level : out.in_functions).push_back(utf8_of(tuple_item(names, unit.arg)));
    } else if (is_module && (unit.opcode == ops.store_name || unit.opcode == ops.delete_name)) {
      out.top_level.push_back(utf8_of(tuple_item(names, unit.arg)));
    } else if (is_module && unit.opcode == ops.setup_annotations) {
      out.top_level.push_back("__annotations__");
    }
    // 3.14 (PEP 649): annotations are a function the module binds
    // (STORE_NAME __annotate__, counted above); module.__annotations__
    // computes the dict from it and keeps it in the namespace.
    if (is_module && unit.opcode == ops.store_name && utf8_of(tuple_item(names, unit.arg)) == "__annotate__")
      out.top_level.push_back("__annotations__");
  }
  PyObject* consts = code->co_consts;  // borrowed
  if (depth > 64 || !consts || !PyTuple_Check(consts)) return;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); ++i) {
    PyObject* item = PyTuple_GET_ITEM(consts, i);
    if (PyCode_Check(item)) collect_bound_names(ops, reinterpret_cast<PyCodeObject*>(item), false, out, depth + 1);
  }
}

void collect_reads(const bytecode_opcodes& ops, PyCodeObject* code, std::set<std::string>& out, int depth) {
  PyObject* names = code->co_names;  // borrowed: the code keeps them
  for (const instruction& unit : decode(ops, code)) {
    unsigned long index = unit.arg;
    // Since 3.11 LOAD_GLOBAL's low bit says "push NULL too", and since 3.12
    // LOAD_ATTR's says "a method call": the name is the rest.
    if (unit.opcode == ops.load_global) {
      index >>= 1;
    } else if (unit.opcode == ops.load_attr) {
      if (ops.load_method < 0) index >>= 1;
    } else if (unit.opcode != ops.load_name && unit.opcode != ops.load_method &&
               unit.opcode != ops.load_from_dict_or_globals) {
      continue;
    }
    std::string name = utf8_of(tuple_item(names, index));
    if (!name.empty()) out.insert(std::move(name));
  }
  PyObject* consts = code->co_consts;  // borrowed
  if (depth > 64 || !consts || !PyTuple_Check(consts)) return;
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(consts); ++i) {
    PyObject* item = PyTuple_GET_ITEM(consts, i);
    if (!PyCode_Check(item)) continue;
    auto* nested = reinterpret_cast<PyCodeObject*>(item);
    // A class body (not CO_OPTIMIZED) runs at once; so does a comprehension
    // (a function of its own until 3.12, named "<listcomp>" and the like),
    // while a function or a lambda runs when something calls it.
    std::string name = utf8_of(nested->co_name);
    bool comprehension = name.size() > 2 && name.front() == '<' && name != "<lambda>";
    if (!(nested->co_flags & CO_OPTIMIZED) || comprehension) collect_reads(ops, nested, out, depth + 1);
  }
}

}  // namespace

std::vector<std::string> names_read_at_top_level(const bytecode_opcodes& ops, PyObject* code) {
  std::set<std::string> found;
  if (code && PyCode_Check(code)) collect_reads(ops, reinterpret_cast<PyCodeObject*>(code), found, 0);
  return {found.begin(), found.end()};
}

bound_names names_bound_by(const bytecode_opcodes& ops, PyObject* code) {
  bound_names out;
  if (code && PyCode_Check(code)) collect_bound_names(ops, reinterpret_cast<PyCodeObject*>(code), true, out, 0);
  return out;
}

std::vector<std::pair<std::string, PyObject*>> constants_bound_by(const bytecode_opcodes& ops, PyObject* code) {
  std::vector<std::pair<std::string, PyObject*>> found;
  if (!code || !PyCode_Check(code)) return found;
  auto* body = reinterpret_cast<PyCodeObject*>(code);
  std::vector<instruction> units = decode(ops, body);
  std::set<std::string> stored;
  for (std::size_t k = 0; k < units.size(); ++k) {
    if (units[k].opcode != ops.store_name) continue;
    std::string name = utf8_of(tuple_item(body->co_names, units[k].arg));
    if (!stored.insert(name).second) {  // bound again: not a constant of the class
      found.erase(std::remove_if(found.begin(), found.end(), [&](const auto& item) { return item.first == name; }),
                  found.end());
      continue;
    }
    if (k > 0 && units[k - 1].opcode == ops.load_const) {
      if (PyObject* constant = tuple_item(body->co_consts, units[k - 1].arg)) found.emplace_back(name, constant);
    } else if (k > 0 && units[k - 1].opcode == ops.load_small_int) {
      // Small ints are immortal (3.12+; LOAD_SMALL_INT is 3.14+): the
      // borrowed pointer stays valid after `value` lets go of it.
      py::object value = steal(PyLong_FromUnsignedLong(units[k - 1].arg));
      if (!value) throw py::error_already_set();
      found.emplace_back(name, value.ptr());
    }
  }
  return found;
}

std::vector<import_statement> imports_of(const bytecode_opcodes& ops, PyObject* code) {
  std::vector<import_statement> out;
  if (code && PyCode_Check(code)) scan(ops, reinterpret_cast<PyCodeObject*>(code), out, 0);
  return out;
}

}  // namespace modhost::detail
