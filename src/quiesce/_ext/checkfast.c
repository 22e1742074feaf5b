#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyMethodDef methods[] = {
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "quiesce._checkfast", NULL, -1, methods,
};

PyMODINIT_FUNC PyInit__checkfast(void) { return PyModule_Create(&module); }
