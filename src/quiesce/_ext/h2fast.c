/* quiesce._h2fast: an HTTP/2 stream's answer, from the HTTP/1.1 bytes the exchange wrote to
 * its header list, in one call (quiesce.dataplane.h2.stream; the pure twin is
 * quiesce.dataplane.h2.stream.answer_fields, which tests/dataplane/test_h2fast.py compares it
 * with, answer by answer).
 *
 *   answer(data) -> (fields, length, body) | None
 *
 * `data` is what the exchange writes for a final answer: its head (the proxy's own, made from
 * a head already parsed once: a status line and `name: value` lines) and what followed it.
 * `fields` is the HTTP/2 header list: (b":status", code) first, then each field with its
 * name in lower case and its value without white space at either end, the connection-specific
 * ones (RFC 9113 §8.2.2) left out; `length` is Content-Length (-1: none); `body` the bytes
 * after the head. None (the caller's parser takes it) for anything else: no whole head, not
 * HTTP/1.1, an interim (1xx) status, Transfer-Encoding, a Content-Length that is not a
 * number, a line without a colon.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static PyObject *S_STATUS;

/* Connection-specific (dropped), by lower-case name; 2: transfer-encoding (decline). */
static int hop(const char *n, Py_ssize_t len)
{
    switch (len) {
    case 2:
        return memcmp(n, "te", 2) == 0;
    case 7:
        return memcmp(n, "upgrade", 7) == 0;
    case 10:
        return memcmp(n, "connection", 10) == 0 || memcmp(n, "keep-alive", 10) == 0;
    case 16:
        return memcmp(n, "proxy-connection", 16) == 0;
    case 17:
        return memcmp(n, "transfer-encoding", 17) == 0 ? 2 : 0;
    default:
        return 0;
    }
}

static int is_ws(char c) { return c == ' ' || c == '\t'; }

static PyObject *answer(PyObject *module, PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "answer(data: bytes)");
        return NULL;
    }
    const char *buf = PyBytes_AS_STRING(data);
    Py_ssize_t len = PyBytes_GET_SIZE(data);
    if (len < 16 || memcmp(buf, "HTTP/1.1 ", 9) != 0)
        Py_RETURN_NONE;
    const char *c = buf + 9;
    if (c[0] < '2' || c[0] > '9' || c[1] < '0' || c[1] > '9' || c[2] < '0' || c[2] > '9')
        Py_RETURN_NONE;
    const char *end = NULL; /* the blank line's CRLF CRLF */
    for (const char *p = c + 3; p + 4 <= buf + len; p++) {
        p = memchr(p, '\r', (size_t)(buf + len - p));
        if (p == NULL || p + 4 > buf + len)
            break;
        if (p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
            end = p;
            break;
        }
    }
    if (end == NULL)
        Py_RETURN_NONE;
    const char *p = memchr(c, '\r', (size_t)(end - c)); /* after the status line */
    if (p == NULL)
        p = end;
    Py_ssize_t length = -1;
    PyObject *fields = PyList_New(0);
    if (fields == NULL)
        return NULL;
    PyObject *code = PyBytes_FromStringAndSize(c, 3);
    PyObject *pair = code ? PyTuple_Pack(2, S_STATUS, code) : NULL;
    Py_XDECREF(code);
    if (pair == NULL || PyList_Append(fields, pair) < 0)
        goto error;
    Py_DECREF(pair);
    pair = NULL;
    while (p < end) {
        const char *line = p + 2; /* (p at the CRLF before it) */
        const char *eol = memchr(line, '\r', (size_t)(end - line));
        if (eol == NULL)
            eol = end;
        p = eol;
        const char *colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line)
            goto decline;
        Py_ssize_t nlen = colon - line;
        const char *v = colon + 1, *ve = eol;
        while (v < ve && is_ws(*v))
            v++;
        while (ve > v && is_ws(ve[-1]))
            ve--;
        PyObject *name = PyBytes_FromStringAndSize(NULL, nlen);
        if (name == NULL)
            goto error;
        char *n = PyBytes_AS_STRING(name);
        for (Py_ssize_t i = 0; i < nlen; i++) {
            char ch = line[i];
            n[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
        }
        int h = hop(n, nlen);
        if (h) {
            Py_DECREF(name);
            if (h == 2)
                goto decline;
            continue;
        }
        if (nlen == 14 && memcmp(n, "content-length", 14) == 0) {
            if (ve == v || ve - v > 15) {
                Py_DECREF(name);
                goto decline;
            }
            Py_ssize_t x = 0;
            for (const char *d = v; d < ve; d++) {
                if (*d < '0' || *d > '9') {
                    Py_DECREF(name);
                    goto decline;
                }
                x = x * 10 + (*d - '0');
            }
            length = x;
        }
        PyObject *value = PyBytes_FromStringAndSize(v, ve - v);
        if (value == NULL) {
            Py_DECREF(name);
            goto error;
        }
        pair = PyTuple_New(2);
        if (pair == NULL) {
            Py_DECREF(name);
            Py_DECREF(value);
            goto error;
        }
        PyTuple_SET_ITEM(pair, 0, name);
        PyTuple_SET_ITEM(pair, 1, value);
        if (PyList_Append(fields, pair) < 0)
            goto error;
        Py_DECREF(pair);
        pair = NULL;
    }
    PyObject *body = PyBytes_FromStringAndSize(end + 4, buf + len - (end + 4));
    if (body == NULL)
        goto error;
    PyObject *out = PyTuple_New(3);
    if (out == NULL) {
        Py_DECREF(body);
        goto error;
    }
    PyObject *n = PyLong_FromSsize_t(length);
    if (n == NULL) {
        Py_DECREF(body);
        Py_DECREF(out);
        goto error;
    }
    PyTuple_SET_ITEM(out, 0, fields);
    PyTuple_SET_ITEM(out, 1, n);
    PyTuple_SET_ITEM(out, 2, body);
    return out;
decline:
    Py_DECREF(fields);
    Py_RETURN_NONE;
error:
    Py_XDECREF(pair);
    Py_DECREF(fields);
    return NULL;
}

static PyMethodDef methods[] = {
    {"answer", (PyCFunction)answer, METH_O,
     "answer(data) -> (fields, length, body) | None: an HTTP/1.1 answer's head as an "
     "HTTP/2 header list"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "quiesce._h2fast", "An HTTP/2 stream's answer head, in C.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__h2fast(void)
{
    if (S_STATUS == NULL) {
        S_STATUS = PyBytes_FromString(":status");
        if (S_STATUS == NULL)
            return NULL;
    }
    return PyModule_Create(&module);
}
