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
 *
 *   request(...): a stream's request from its header list (see below);
 *   frames(data, i, max_frame) -> int: the HTTP/2 guard's walk over the frames it passes
 *   without a word (quiesce.dataplane.h2.guard.Guard.feed; see below).
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

/* ---- a stream's request ---------------------------------------------------------------- */

#define MAX_REQ_FIELDS 128

enum { K_FORWARD, K_DROP, K_HOST, K_LENGTH, K_COOKIE, K_XFF, K_EXPECT, K_NEVER };

/* quiesce.dataplane.h1.headers.REQUEST_SPECIAL, by name as HTTP/2 has it (lower case). */
static int request_kind(const char *n, Py_ssize_t len)
{
#define IS(lit) (len == (Py_ssize_t)sizeof(lit) - 1 && memcmp(n, lit, sizeof(lit) - 1) == 0)
    switch (len) {
    case 2:
        return IS("te") ? K_DROP : K_FORWARD;
    case 4:
        return IS("host") ? K_HOST : K_FORWARD;
    case 6:
        if (IS("cookie"))
            return K_COOKIE;
        return IS("expect") ? K_EXPECT : K_FORWARD;
    case 7:
        if (IS("trailer"))
            return K_DROP;
        return IS("upgrade") ? K_NEVER : K_FORWARD;
    case 10:
        if (IS("connection"))
            return K_NEVER;
        return IS("keep-alive") ? K_DROP : K_FORWARD;
    case 14:
        return IS("content-length") ? K_LENGTH : K_FORWARD;
    case 15:
        return IS("x-forwarded-for") ? K_XFF : K_FORWARD;
    case 16:
        return (IS("proxy-connection") || IS("x-forwarded-host")) ? K_DROP : K_FORWARD;
    case 17:
        if (IS("transfer-encoding"))
            return K_NEVER;
        return IS("x-forwarded-proto") ? K_DROP : K_FORWARD;
    case 18:
        return IS("proxy-authenticate") ? K_DROP : K_FORWARD;
    case 19:
        return IS("proxy-authorization") ? K_DROP : K_FORWARD;
    case 23:
        return IS("x-forwarded-client-cert") ? K_DROP : K_FORWARD;
    default:
        return K_FORWARD;
    }
#undef IS
}

static inline char *put(char *o, const char *s, Py_ssize_t n)
{
    memcpy(o, s, (size_t)n);
    return o + n;
}

#define PUTLIT(o, lit) put(o, lit, (Py_ssize_t)sizeof(lit) - 1)
#define SPAN(obj) PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj)

static int same(PyObject *a, PyObject *b)
{
    return PyBytes_GET_SIZE(a) == PyBytes_GET_SIZE(b) &&
           memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(a)) == 0;
}

/* request(headers, end_stream, peer, forwarded, max_line, max_header)
 *   -> (method, path, host, cookie, head, fields, flags) | int | None
 * quiesce.dataplane.h2.request.stream_request's C twin: an int is its refusal (1: malformed,
 * 414, 431); None: not for C (not a tuple or list, longer than MAX_REQ_FIELDS, a field not
 * two bytes),
 * the Python path's then. flags: 1 chunked, 2 expect (100-continue), 4 complete (no body). */
static PyObject *request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyBytes_CheckExact(args[2]) ||
        !PyBytes_CheckExact(args[3])) {
        PyErr_SetString(PyExc_TypeError,
                        "request(headers: list, end_stream, peer: bytes, forwarded: bytes, "
                        "max_line, max_header)");
        return NULL;
    }
    int end_stream = PyObject_IsTrue(args[1]);
    Py_ssize_t max_line = PyLong_AsSsize_t(args[4]);
    Py_ssize_t max_header = PyLong_AsSsize_t(args[5]);
    if (end_stream < 0 || PyErr_Occurred())
        return NULL;
    PyObject *list = args[0]; /* a tuple (ngh2's) or a list */
    if (!PyTuple_CheckExact(list) && !PyList_CheckExact(list))
        Py_RETURN_NONE;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(list);
    if (count > MAX_REQ_FIELDS)
        Py_RETURN_NONE;
    PyObject *method = NULL, *path = NULL, *authority = NULL, *host = NULL, *length = NULL;
    PyObject *fwd[MAX_REQ_FIELDS]; /* the field tuples the head keeps as lines */
    PyObject *cookies[MAX_REQ_FIELDS], *xffs[MAX_REQ_FIELDS];
    int nfwd = 0, ncookie = 0, nxff = 0, expect = 0;
    Py_ssize_t lines_size = 0, cookie_size = 0, xff_size = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *field = PySequence_Fast_GET_ITEM(list, i);
        if (!PyTuple_CheckExact(field) || PyTuple_GET_SIZE(field) != 2)
            Py_RETURN_NONE;
        PyObject *name = PyTuple_GET_ITEM(field, 0), *value = PyTuple_GET_ITEM(field, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value) || PyBytes_GET_SIZE(name) == 0)
            Py_RETURN_NONE;
        const char *n = PyBytes_AS_STRING(name);
        Py_ssize_t nlen = PyBytes_GET_SIZE(name), vlen = PyBytes_GET_SIZE(value);
        if (n[0] == ':') {
            if (nlen == 7 && memcmp(n, ":method", 7) == 0)
                method = value;
            else if (nlen == 5 && memcmp(n, ":path", 5) == 0)
                path = value;
            else if (nlen == 10 && memcmp(n, ":authority", 10) == 0)
                authority = value;
            continue;
        }
        int kind = request_kind(n, nlen);
        switch (kind) {
        case K_FORWARD:
            fwd[nfwd++] = field;
            lines_size += nlen + 2 + vlen + 2;
            break;
        case K_COOKIE:
            cookie_size += (ncookie ? 2 : 0) + vlen;
            cookies[ncookie++] = value;
            break;
        case K_HOST:
            if (host != NULL && !same(host, value))
                return PyLong_FromLong(1);
            host = value;
            break;
        case K_LENGTH: {
            const char *v = PyBytes_AS_STRING(value);
            if (vlen == 0 || (length != NULL && !same(length, value)))
                return PyLong_FromLong(1);
            for (Py_ssize_t j = 0; j < vlen; j++)
                if (v[j] < '0' || v[j] > '9')
                    return PyLong_FromLong(1);
            if (length == NULL) {
                fwd[nfwd++] = field;
                lines_size += nlen + 2 + vlen + 2;
            }
            length = value;
            break;
        }
        case K_XFF:
            xff_size += (nxff ? 2 : 0) + vlen;
            xffs[nxff++] = value;
            break;
        case K_EXPECT: {
            const char *v = PyBytes_AS_STRING(value);
            int cont = vlen == 12;
            for (Py_ssize_t j = 0; cont && j < 12; j++) {
                char ch = v[j];
                if (ch >= 'A' && ch <= 'Z')
                    ch = (char)(ch + 32);
                cont = ch == "100-continue"[j];
            }
            if (cont) {
                expect = 1;
            } else {
                fwd[nfwd++] = field;
                lines_size += nlen + 2 + vlen + 2;
            }
            break;
        }
        case K_NEVER:
            return PyLong_FromLong(1);
        default: /* K_DROP */
            break;
        }
    }
    if (method == NULL || path == NULL)
        return PyLong_FromLong(1);
    if (PyBytes_GET_SIZE(path) > max_line)
        return PyLong_FromLong(414);
    if (authority != NULL)
        host = authority;
    if (host != NULL)
        lines_size += 8 + PyBytes_GET_SIZE(host);
    if (ncookie)
        lines_size += 10 + cookie_size;
    if (lines_size > max_header)
        return PyLong_FromLong(431);
    int chunked = !end_stream && length == NULL;
    int complete = !chunked && (length == NULL || (PyBytes_GET_SIZE(length) == 1 &&
                                                   PyBytes_AS_STRING(length)[0] == '0'));

    /* the rules' view: the client's fields (host first, cookies joined) */
    PyObject *cookie = NULL, *fields = NULL, *head = NULL, *out = NULL;
    if (ncookie == 1) {
        cookie = cookies[0];
        Py_INCREF(cookie);
    } else if (ncookie > 1) {
        cookie = PyBytes_FromStringAndSize(NULL, cookie_size);
        if (cookie == NULL)
            return NULL;
        char *o = PyBytes_AS_STRING(cookie);
        for (int i = 0; i < ncookie; i++) {
            if (i)
                o = PUTLIT(o, "; ");
            o = put(o, SPAN(cookies[i]));
        }
    }
    fields = PyList_New(0);
    if (fields == NULL)
        goto error;
    if (host != NULL) {
        PyObject *pair = Py_BuildValue("(yO)", "host", host);
        if (pair == NULL || PyList_Append(fields, pair) < 0) {
            Py_XDECREF(pair);
            goto error;
        }
        Py_DECREF(pair);
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *field = PySequence_Fast_GET_ITEM(list, i);
        const char *n = PyBytes_AS_STRING(PyTuple_GET_ITEM(field, 0));
        if (n[0] == ':')
            continue;
        int kind = request_kind(n, PyBytes_GET_SIZE(PyTuple_GET_ITEM(field, 0)));
        if (kind != K_COOKIE && kind != K_HOST && PyList_Append(fields, field) < 0)
            goto error;
    }
    if (cookie != NULL) {
        PyObject *pair = Py_BuildValue("(yO)", "cookie", cookie);
        if (pair == NULL || PyList_Append(fields, pair) < 0) {
            Py_XDECREF(pair);
            goto error;
        }
        Py_DECREF(pair);
    }

    /* the head */
    Py_ssize_t peer_n = PyBytes_GET_SIZE(args[2]), fwd_n = PyBytes_GET_SIZE(args[3]);
    Py_ssize_t size = PyBytes_GET_SIZE(method) + 1 + PyBytes_GET_SIZE(path) + 11 + lines_size +
                      17 + (xff_size ? xff_size + 2 : 0) + peer_n + 2 + fwd_n +
                      (host != NULL ? 20 + PyBytes_GET_SIZE(host) : 0) + (chunked ? 28 : 0) + 2;
    head = PyBytes_FromStringAndSize(NULL, size);
    if (head == NULL)
        goto error;
    char *o = PyBytes_AS_STRING(head);
    o = put(o, SPAN(method));
    *o++ = ' ';
    o = put(o, SPAN(path));
    o = PUTLIT(o, " HTTP/1.1\r\n");
    if (host != NULL) {
        o = PUTLIT(o, "host: ");
        o = put(o, SPAN(host));
        o = PUTLIT(o, "\r\n");
    }
    for (int i = 0; i < nfwd; i++) {
        o = put(o, SPAN(PyTuple_GET_ITEM(fwd[i], 0)));
        o = PUTLIT(o, ": ");
        o = put(o, SPAN(PyTuple_GET_ITEM(fwd[i], 1)));
        o = PUTLIT(o, "\r\n");
    }
    if (cookie != NULL) {
        o = PUTLIT(o, "cookie: ");
        o = put(o, SPAN(cookie));
        o = PUTLIT(o, "\r\n");
    }
    o = PUTLIT(o, "X-Forwarded-For: ");
    if (xff_size) { /* (the client's, joined, when not empty: as forward_request) */
        for (int i = 0; i < nxff; i++) {
            if (i)
                o = PUTLIT(o, ", ");
            o = put(o, SPAN(xffs[i]));
        }
        o = PUTLIT(o, ", ");
    }
    o = put(o, SPAN(args[2]));
    o = PUTLIT(o, "\r\n");
    o = put(o, SPAN(args[3]));
    if (host != NULL) {
        o = PUTLIT(o, "X-Forwarded-Host: ");
        o = put(o, SPAN(host));
        o = PUTLIT(o, "\r\n");
    }
    if (chunked)
        o = PUTLIT(o, "Transfer-Encoding: chunked\r\n");
    o = PUTLIT(o, "\r\n");
    if (o != PyBytes_AS_STRING(head) + size) {
        PyErr_SetString(PyExc_SystemError, "h2fast: request size mismatch");
        goto error;
    }
    out = PyTuple_New(7);
    if (out == NULL)
        goto error;
    Py_INCREF(method);
    Py_INCREF(path);
    PyObject *h = host != NULL ? host : Py_None;
    Py_INCREF(h);
    PyTuple_SET_ITEM(out, 0, method);
    PyTuple_SET_ITEM(out, 1, path);
    PyTuple_SET_ITEM(out, 2, h);
    PyTuple_SET_ITEM(out, 3, cookie != NULL ? cookie : Py_NewRef(Py_None));
    PyTuple_SET_ITEM(out, 4, head);
    PyTuple_SET_ITEM(out, 5, fields);
    PyObject *flags = PyLong_FromLong(chunked | (expect << 1) | (complete << 2));
    if (flags == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(out, 6, flags);
    return out;
error:
    Py_XDECREF(cookie);
    Py_XDECREF(fields);
    Py_XDECREF(head);
    return NULL;
}

/* frames(data, i, max_frame) -> int: the offset of the first frame header at or after `i`
 * (itself a frame header's offset in `data`) that quiesce.dataplane.h2.guard.Guard.feed must
 * look at, walking over the frames it would pass without a word; at or past len(data) when
 * every frame from `i` on is such a frame (the offset the next frame starts at: its excess is
 * what of the last frame the next read carries). It stops at: fewer than 9 bytes left (a
 * header to hold), a frame longer than `max_frame`, GOAWAY, RST_STREAM, PRIORITY,
 * CONTINUATION, a HEADERS without END_HEADERS or empty, a SETTINGS or PING without ACK, an
 * empty DATA without END_STREAM: the frames the guard counts, refuses or takes out (its Python
 * walk, which QUIESCE_PURE=1 keeps alone, is the twin: tests/dataplane/test_h2_guard_scan.py).
 */
static PyObject *frames(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "frames(data, i, max_frame)");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    long long max_frame = PyLong_AsLongLong(args[2]);
    if ((i == -1 || max_frame == -1) && PyErr_Occurred()) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)view.buf;
    Py_ssize_t n = view.len;
    if (i < 0)
        i = 0;
    while (i < n) {
        if (n - i < 9)
            break;
        long long length = ((long long)d[i] << 16) | ((long long)d[i + 1] << 8) | d[i + 2];
        unsigned char kind = d[i + 3], flags = d[i + 4];
        if (length > max_frame)
            break;
        int pass;
        switch (kind) {
        case 0: /* DATA */
            pass = length != 0 || (flags & 0x1);
            break;
        case 1: /* HEADERS */
            pass = (flags & 0x4) && length != 0;
            break;
        case 4: /* SETTINGS */
        case 6: /* PING */
            pass = flags & 0x1;
            break;
        case 2: /* PRIORITY */
        case 3: /* RST_STREAM */
        case 7: /* GOAWAY */
        case 9: /* CONTINUATION */
            pass = 0;
            break;
        default: /* WINDOW_UPDATE, PUSH_PROMISE, unknown */
            pass = 1;
        }
        if (!pass)
            break;
        i += 9 + (Py_ssize_t)length;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(i);
}

static PyMethodDef methods[] = {
    {"answer", (PyCFunction)answer, METH_O,
     "answer(data) -> (fields, length, body) | None: an HTTP/1.1 answer's head as an "
     "HTTP/2 header list"},
    {"request", (PyCFunction)(void (*)(void))request, METH_FASTCALL,
     "request(headers, end_stream, peer, forwarded, max_line, max_header) -> (method, path, "
     "host, cookie, head, fields, flags) | int | None"},
    {"frames", (PyCFunction)(void (*)(void))frames, METH_FASTCALL,
     "frames(data, i, max_frame) -> int: the first frame header from i the HTTP/2 guard "
     "must look at"},
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
