#include <pybind11/pybind11.h>  // Python.h first, as CPython requires

#include "modules/internal/reference_counts.h"

#include <algorithm>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace py = pybind11;

namespace modhost::detail {
namespace {

// What gc.get_referents(obj) visits: nothing for an object the collector does not track.
template <typename Visit>
void for_each_referent(PyObject* obj, Visit& visit) {
  if (!PyObject_IS_GC(obj) || Py_TYPE(obj)->tp_traverse == nullptr) return;
  Py_TYPE(obj)->tp_traverse(
      obj, [](PyObject* referent, void* arg) { return (*static_cast<Visit*>(arg))(referent); }, &visit);
}

}  // namespace

py::list uncounted_references(const py::list& objects, const py::list& holders) {
  // Made first: an allocation of a tracked object can start a collection,
  // which could change the refcounts read below.
  py::list uncounted(PyList_GET_SIZE(objects.ptr()));
  // Only references to `objects` are counted: the holders' other referents
  // (a namespace's every value) are looked up, never stored.
  std::unordered_map<PyObject*, Py_ssize_t> counted;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objects.ptr()); ++i) counted.emplace(PyList_GET_ITEM(objects.ptr(), i), 0);
  auto count = [&counted](PyObject* referent) {
    auto found = counted.find(referent);
    if (found != counted.end()) ++found->second;
    return 0;
  };
  std::vector<PyObject*> distinct;
  distinct.reserve(static_cast<std::size_t>(PyList_GET_SIZE(holders.ptr())));
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(holders.ptr()); ++i) {
    PyObject* holder = PyList_GET_ITEM(holders.ptr(), i);
    count(holder);  // the list's own entry
    distinct.push_back(holder);
  }
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  for (PyObject* holder : distinct) for_each_referent(holder, count);
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(uncounted.ptr()); ++i) {
    PyObject* obj = PyList_GET_ITEM(objects.ptr(), i);
    PyObject* number = PyLong_FromSsize_t(Py_REFCNT(obj) - counted[obj]);
    if (number == nullptr) throw py::error_already_set();
    PyList_SET_ITEM(uncounted.ptr(), i, number);
  }
  return uncounted;
}

py::list holders_among(const py::list& holders, const py::list& objects, const py::list& ignored) {
  std::unordered_set<PyObject*> wanted;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(objects.ptr()); ++i) wanted.insert(PyList_GET_ITEM(objects.ptr(), i));
  std::unordered_set<PyObject*> seen;
  seen.reserve(static_cast<std::size_t>(PyList_GET_SIZE(holders.ptr())));
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(ignored.ptr()); ++i) seen.insert(PyList_GET_ITEM(ignored.ptr(), i));
  py::list found;
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(holders.ptr()); ++i) {
    PyObject* holder = PyList_GET_ITEM(holders.ptr(), i);
    if (!seen.insert(holder).second) continue;
    bool holds = false;
    auto check = [&wanted, &holds](PyObject* referent) {
      holds = wanted.count(referent) > 0;
      return holds ? 1 : 0;  // nonzero stops the traversal
    };
    for_each_referent(holder, check);
    if (holds) found.append(holder);
  }
  return found;
}

}  // namespace modhost::detail
