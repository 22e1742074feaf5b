/* quiesce._logfast: the access log's httplog and json lines, in C.

   format(entries, offset, json, prefix, seq) -> (bytes, seq)

   The same lines as quiesce.logs.access.Formatter (httplog or json), each followed by "\n",
   for a list of entries (tuples of 18, in the order that module's docstring gives); ``seq``
   is the last request id given, and the one returned the last given here. Paths and methods
   are escaped as there (bytes outside printable ASCII, and '"', '\\', '#', as #XX); the json
   timings go through PyOS_double_to_string as Python's '%.3f' does, so the bytes are the
   same as the Python formatter's, which tests/logs/test_access_format.py checks. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <time.h>

typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int buf_reserve(Buf *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Callers reserve first: the helpers below only write. */
static inline void put(Buf *b, const char *s, Py_ssize_t n) {
    memcpy(b->p + b->len, s, n);
    b->len += n;
}
#define PUTS(b, lit) put((b), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static inline void put_ll(Buf *b, long long v) {
    char tmp[24];
    int i = 24;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        tmp[--i] = '-';
    put(b, tmp + i, 24 - i);
}

static inline void put_hex(Buf *b, unsigned long long u) {
    char tmp[20];
    int i = 20;
    do {
        tmp[--i] = "0123456789abcdef"[u & 15];
        u >>= 4;
    } while (u);
    put(b, tmp + i, 20 - i);
}

static inline void put_ms3(Buf *b, long v) { /* %03d of 0..999 */
    char tmp[3] = {(char)('0' + v / 100 % 10), (char)('0' + v / 10 % 10), (char)('0' + v % 10)};
    put(b, tmp, 3);
}

/* A Python '%d' of a float: truncated toward zero. */
static inline long long trunc_ll(double x) { return (long long)x; }

static int put_fixed3(Buf *b, double x) { /* Python's '%.3f' */
    char *s = PyOS_double_to_string(x, 'f', 3, 0, NULL);
    if (s == NULL)
        return -1;
    Py_ssize_t n = (Py_ssize_t)strlen(s);
    if (buf_reserve(b, n) < 0) {
        PyMem_Free(s);
        return -1;
    }
    put(b, s, n);
    PyMem_Free(s);
    return 0;
}

static int put_str(Buf *b, PyObject *o) { /* a name; None or "" as "-" when dash */
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(o, &n);
    if (s == NULL)
        return -1;
    if (buf_reserve(b, n) < 0)
        return -1;
    put(b, s, n);
    return 0;
}

static int put_name(Buf *b, PyObject *o) { /* ``name or "-"`` */
    if (o == Py_None || (PyUnicode_Check(o) && PyUnicode_GET_LENGTH(o) == 0)) {
        PUTS(b, "-");
        return 0;
    }
    return put_str(b, o);
}

static int put_word(Buf *b, PyObject *o) { /* quiesce.logs.access._text */
    if (o == Py_None) {
        PUTS(b, "-");
        return 0;
    }
    char *s;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(o, &s, &n) < 0)
        return -1;
    if (buf_reserve(b, 3 * n) < 0)
        return -1;
    char *out = b->p + b->len;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c > 0x20 && c < 0x7F && c != '"' && c != '\\' && c != '#') {
            *out++ = (char)c;
        } else {
            *out++ = '#';
            *out++ = "0123456789ABCDEF"[c >> 4];
            *out++ = "0123456789ABCDEF"[c & 15];
        }
    }
    b->len = out - b->p;
    return 0;
}

static const char *MONTHS[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                               "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* The date of the second, cached (the module is used from the event loop's thread only). */
static long long stamp_second = -1;
static char stamp_http[32], stamp_iso[32];
static int stamp_http_len, stamp_iso_len;

static void stamps(long long second) {
    if (second == stamp_second)
        return;
    time_t t = (time_t)second;
    struct tm tm;
    gmtime_r(&t, &tm);
    stamp_http_len = snprintf(stamp_http, sizeof stamp_http, "%02d/%s/%d:%02d:%02d:%02d",
                              tm.tm_mday, MONTHS[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                              tm.tm_min, tm.tm_sec);
    stamp_iso_len = snprintf(stamp_iso, sizeof stamp_iso, "%d-%02d-%02dT%02d:%02d:%02d",
                             tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                             tm.tm_sec);
    stamp_second = second;
}

static inline double ms_or(double x) { return x >= 0.0 ? x * 1000.0 : -1.0; }

static int one(Buf *b, PyObject *e, double offset, int json, const char *prefix,
               Py_ssize_t prefix_len, unsigned long long seq) {
    if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 18) {
        PyErr_SetString(PyExc_TypeError, "an access-log entry is a tuple of 18");
        return -1;
    }
    PyObject **f = &PyTuple_GET_ITEM(e, 0);
    double end = PyFloat_AsDouble(f[0]);
    long layer = PyLong_AsLong(f[1]);
    long long port = PyLong_AsLongLong(f[3]);
    double tw = PyFloat_AsDouble(f[12]), tc = PyFloat_AsDouble(f[13]);
    double tr = PyFloat_AsDouble(f[14]), tt = PyFloat_AsDouble(f[15]);
    long long nin = PyLong_AsLongLong(f[10]), nout = PyLong_AsLongLong(f[11]);
    long long retries = PyLong_AsLongLong(f[16]);
    long long status = layer == 4 ? 0 : PyLong_AsLongLong(f[9]);
    if (PyErr_Occurred())
        return -1;
    double start = end + offset - (tt > 0.0 ? tt : 0.0);
    long long second = (long long)start;
    stamps(second);
    long ms = (long)((start - (double)second) * 1000.0);
    double w = ms_or(tw), c = ms_or(tc), t = ms_or(tt);
    if (buf_reserve(b, 400 + prefix_len) < 0)
        return -1;
    if (!json) {
        if (put_str(b, f[2]) < 0)
            return -1;
        if (buf_reserve(b, 64) < 0)
            return -1;
        PUTS(b, ":");
        put_ll(b, port);
        PUTS(b, " [");
        put(b, stamp_http, stamp_http_len);
        PUTS(b, ".");
        put_ms3(b, ms);
        PUTS(b, "] ");
        if (put_str(b, f[4]) < 0 || buf_reserve(b, 2) < 0)
            return -1;
        PUTS(b, " ");
        if (put_name(b, f[5]) < 0 || buf_reserve(b, 2) < 0)
            return -1;
        PUTS(b, "/");
        if (put_name(b, f[6]) < 0 || buf_reserve(b, 200) < 0)
            return -1;
        PUTS(b, " ");
        put_ll(b, trunc_ll(w));
        PUTS(b, "/");
        put_ll(b, trunc_ll(c));
        PUTS(b, "/");
        if (layer != 4) {
            put_ll(b, trunc_ll(ms_or(tr)));
            PUTS(b, "/");
        }
        put_ll(b, trunc_ll(t));
        PUTS(b, " ");
        if (layer != 4) {
            put_ll(b, status);
            PUTS(b, " ");
        }
        put_ll(b, nout);
        PUTS(b, " ");
        put_ll(b, nin);
        PUTS(b, " ");
        if (put_str(b, f[17]) < 0 || buf_reserve(b, 64 + prefix_len) < 0)
            return -1;
        PUTS(b, " ");
        put_ll(b, retries);
        PUTS(b, " ");
        put(b, prefix, prefix_len);
        PUTS(b, "-");
        put_hex(b, seq);
        if (layer != 4) {
            PUTS(b, " \"");
            if (put_word(b, f[7]) < 0 || buf_reserve(b, 2) < 0)
                return -1;
            PUTS(b, " ");
            if (put_word(b, f[8]) < 0 || buf_reserve(b, 2) < 0)
                return -1;
            PUTS(b, "\"");
        }
    } else {
        PUTS(b, "{\"time\":\"");
        put(b, stamp_iso, stamp_iso_len);
        PUTS(b, ".");
        put_ms3(b, ms);
        if (layer == 4)
            PUTS(b, "Z\",\"layer\":4,\"client_ip\":\"");
        else
            PUTS(b, "Z\",\"layer\":7,\"client_ip\":\"");
        if (put_str(b, f[2]) < 0 || buf_reserve(b, 64) < 0)
            return -1;
        PUTS(b, "\",\"client_port\":");
        put_ll(b, port);
        PUTS(b, ",\"service\":\"");
        if (put_str(b, f[4]) < 0 || buf_reserve(b, 16) < 0)
            return -1;
        PUTS(b, "\",\"pool\":\"");
        if (put_name(b, f[5]) < 0 || buf_reserve(b, 16) < 0)
            return -1;
        PUTS(b, "\",\"server\":\"");
        if (put_name(b, f[6]) < 0 || buf_reserve(b, 160) < 0)
            return -1;
        if (layer == 4) {
            PUTS(b, "\",\"method\":null,\"path\":null,\"status\":null,\"bytes_in\":");
        } else {
            PUTS(b, "\",\"method\":\"");
            if (put_word(b, f[7]) < 0 || buf_reserve(b, 16) < 0)
                return -1;
            PUTS(b, "\",\"path\":\"");
            if (put_word(b, f[8]) < 0 || buf_reserve(b, 160) < 0)
                return -1;
            PUTS(b, "\",\"status\":");
            put_ll(b, status);
            PUTS(b, ",\"bytes_in\":");
        }
        put_ll(b, nin);
        PUTS(b, ",\"bytes_out\":");
        put_ll(b, nout);
        PUTS(b, ",\"queue_ms\":");
        if (put_fixed3(b, w) < 0 || buf_reserve(b, 32) < 0)
            return -1;
        PUTS(b, ",\"connect_ms\":");
        if (put_fixed3(b, c) < 0 || buf_reserve(b, 32) < 0)
            return -1;
        PUTS(b, ",\"response_ms\":");
        if (layer == 4) {
            PUTS(b, "null");
        } else if (put_fixed3(b, ms_or(tr)) < 0 || buf_reserve(b, 32) < 0) {
            return -1;
        }
        PUTS(b, ",\"total_ms\":");
        if (put_fixed3(b, t) < 0 || buf_reserve(b, 64) < 0)
            return -1;
        PUTS(b, ",\"retries\":");
        put_ll(b, retries);
        PUTS(b, ",\"termination\":\"");
        if (put_str(b, f[17]) < 0 || buf_reserve(b, 48 + prefix_len) < 0)
            return -1;
        PUTS(b, "\",\"request_id\":\"");
        put(b, prefix, prefix_len);
        PUTS(b, "-");
        put_hex(b, seq);
        PUTS(b, "\"}");
    }
    if (buf_reserve(b, 1) < 0)
        return -1;
    PUTS(b, "\n");
    return 0;
}

static PyObject *logfast_format(PyObject *self, PyObject *args) {
    PyObject *entries;
    double offset;
    int json;
    const char *prefix;
    Py_ssize_t prefix_len;
    unsigned long long seq;
    if (!PyArg_ParseTuple(args, "O!dps#K", &PyList_Type, &entries, &offset, &json, &prefix,
                          &prefix_len, &seq))
        return NULL;
    Buf b = {NULL, 0, 0};
    Py_ssize_t n = PyList_GET_SIZE(entries);
    if (buf_reserve(&b, n * 256 + 64) < 0)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (one(&b, PyList_GET_ITEM(entries, i), offset, json, prefix, prefix_len, ++seq) < 0) {
            PyMem_Free(b.p);
            return NULL;
        }
    }
    PyObject *data = PyBytes_FromStringAndSize(b.p, b.len);
    PyMem_Free(b.p);
    if (data == NULL)
        return NULL;
    return Py_BuildValue("(NK)", data, seq);
}

static PyMethodDef methods[] = {
    {"format", logfast_format, METH_VARARGS,
     "format(entries, offset, json, prefix, seq) -> (bytes, seq): httplog or json lines"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_logfast", NULL, -1, methods};

PyMODINIT_FUNC PyInit__logfast(void) { return PyModule_Create(&module); }
