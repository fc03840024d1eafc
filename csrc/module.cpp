// Makes the library importable as the Python module mlperf_fast._C: importing it loads the
// shared object, whose static initializers register the operators with torch. The operators
// themselves are reached through torch.ops.mlperf_fast. CMake builds everything but this file.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
