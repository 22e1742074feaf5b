/* quiesce._httpfast: the L7 proxy's common case in one call per message head.
 *
 * Two pure functions (no state, no I/O), used by quiesce.dataplane.http ahead of httptools:
 *
 *   request(data, peer, max_line, max_header)
 *       -> (method, url, http10, keep_alive, host, cookie, head) | None
 *   response(data, max_header, extra) -> (status, keep_alive, out) | None
 *
 * and, beside them, the per-request traffic counters (HAProxy's bin/bout and the running
 * averages behind ctime/rtime/ttime, quiesce.state.traffic): a `Traffic` record per server
 * and per service, and `account(server, service, nin, nout, rtime, ttime)` that adds one
 * request to both in one call (the pure twin is in quiesce.state.traffic).
 *
 * Each recognises only a strict, simple subset of HTTP/1.1: one whole message in `data` and
 * nothing after it; a request without a body (no Content-Length other than 0, no
 * Transfer-Encoding, Upgrade or Expect), a response framed by Content-Length whose whole body
 * is in `data`; token header names, printable ASCII values without trailing whitespace;
 * Connection only keep-alive or close. Anything else returns None and the caller feeds the
 * same bytes to httptools as if this module did not exist: the subset is chosen so that every
 * message accepted here is accepted by httptools too, and the bytes produced are the ones the
 * Python path produces (tests/dataplane/test_httpfast.py checks both, message by message).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define MAX_FIELDS 100
#define MAX_JOINED 16

static unsigned char is_tchar[256];
static unsigned char is_vchar[256];

static PyObject *M_GET, *M_HEAD, *M_POST, *M_PUT, *M_DELETE, *M_OPTIONS, *M_PATCH;

typedef struct {
    const char *p;
    Py_ssize_t n;
} span;

/* `p[0:n]` equals the lower-case literal `lit`, ignoring ASCII case. Header names are
 * tchars only, so `| 0x20` cannot turn another tchar into a letter or '-'. */
static inline int name_is(const char *p, Py_ssize_t n, const char *lit, Py_ssize_t ln)
{
    if (n != ln)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if ((p[i] | 0x20) != lit[i])
            return 0;
    return 1;
}

#define NAME_IS(lit) name_is(name, nlen, lit, (Py_ssize_t)sizeof(lit) - 1)

enum {
    H_FORWARD,
    H_DROP,
    H_HOST,
    H_LENGTH,
    H_COOKIE,
    H_XFF,
    H_CONNECTION,
    H_DECLINE
};

/* What the proxy does with a request header, by name. */
static int request_kind(const char *name, Py_ssize_t nlen)
{
    switch (nlen) {
    case 2:
        return NAME_IS("te") ? H_DROP : H_FORWARD;
    case 4:
        return NAME_IS("host") ? H_HOST : H_FORWARD;
    case 6:
        if (NAME_IS("cookie"))
            return H_COOKIE;
        return NAME_IS("expect") ? H_DECLINE : H_FORWARD;
    case 7:
        if (NAME_IS("trailer"))
            return H_DROP;
        return NAME_IS("upgrade") ? H_DECLINE : H_FORWARD;
    case 10:
        if (NAME_IS("connection"))
            return H_CONNECTION;
        return NAME_IS("keep-alive") ? H_DROP : H_FORWARD;
    case 14:
        return NAME_IS("content-length") ? H_LENGTH : H_FORWARD;
    case 15:
        if (NAME_IS("x-forwarded-for"))
            return H_XFF;
        return H_FORWARD;
    case 16:
        if (NAME_IS("proxy-connection") || NAME_IS("x-forwarded-host"))
            return H_DROP;
        return H_FORWARD;
    case 17:
        if (NAME_IS("transfer-encoding"))
            return H_DECLINE;
        return NAME_IS("x-forwarded-proto") ? H_DROP : H_FORWARD;
    case 18:
        return NAME_IS("proxy-authenticate") ? H_DROP : H_FORWARD;
    case 19:
        return NAME_IS("proxy-authorization") ? H_DROP : H_FORWARD;
    case 23: /* set by the proxy on a TLS listener: a client's own is never passed on */
        return NAME_IS("x-forwarded-client-cert") ? H_DROP : H_FORWARD;
    default:
        return H_FORWARD;
    }
}

/* What the proxy does with a response header, by name. */
static int response_kind(const char *name, Py_ssize_t nlen)
{
    switch (nlen) {
    case 2:
        return NAME_IS("te") ? H_DROP : H_FORWARD;
    case 7:
        return (NAME_IS("trailer") || NAME_IS("upgrade")) ? H_DROP : H_FORWARD;
    case 10:
        if (NAME_IS("connection"))
            return H_CONNECTION;
        return NAME_IS("keep-alive") ? H_DROP : H_FORWARD;
    case 14:
        return NAME_IS("content-length") ? H_LENGTH : H_FORWARD;
    case 16:
        return NAME_IS("proxy-connection") ? H_DROP : H_FORWARD;
    case 17:
        return NAME_IS("transfer-encoding") ? H_DECLINE : H_FORWARD;
    case 18:
        return NAME_IS("proxy-authenticate") ? H_DROP : H_FORWARD;
    case 19:
        return NAME_IS("proxy-authorization") ? H_DROP : H_FORWARD;
    default:
        return H_FORWARD;
    }
}

#define CONN_KEEP 1
#define CONN_CLOSE 2

/* Connection: keep-alive / close only (any case); 0: something else (decline). */
static int connection_value(const char *v, Py_ssize_t n)
{
    if (name_is(v, n, "keep-alive", 10))
        return CONN_KEEP;
    if (name_is(v, n, "close", 5))
        return CONN_CLOSE;
    return 0;
}

/* The header fields a message keeps, and what its Connection headers said. */
typedef struct {
    span name[MAX_FIELDS];
    span value[MAX_FIELDS];
    int n;
    int conn;
} fields;

/* A field of a kind both directions treat alike: kept, dropped, or Connection; -1: decline. */
static int take(fields *f, int kind, span name, span value)
{
    switch (kind) {
    case H_CONNECTION: {
        int c = connection_value(value.p, value.n);
        if (!c)
            return -1;
        f->conn |= c;
        return 0;
    }
    case H_DROP:
        return 0;
    case H_FORWARD:
        if (f->n == MAX_FIELDS)
            return -1;
        f->name[f->n] = name;
        f->value[f->n++] = value;
        return 0;
    default:
        return -1;
    }
}

/* keep-alive as llhttp says it (-1: both keep-alive and close, decline) */
static int keep_alive_of(int http10, int conn)
{
    if (conn == (CONN_KEEP | CONN_CLOSE))
        return -1;
    return http10 ? (conn == CONN_KEEP) : (conn != CONN_CLOSE);
}

static Py_ssize_t fields_size(const fields *f)
{
    Py_ssize_t size = 0;
    for (int i = 0; i < f->n; i++)
        size += f->name[i].n + 2 + f->value[i].n + 2;
    return size;
}

static char *put_fields(char *o, const fields *f)
{
    for (int i = 0; i < f->n; i++) {
        memcpy(o, f->name[i].p, (size_t)f->name[i].n);
        o += f->name[i].n;
        *o++ = ':';
        *o++ = ' ';
        memcpy(o, f->value[i].p, (size_t)f->value[i].n);
        o += f->value[i].n;
        *o++ = '\r';
        *o++ = '\n';
    }
    return o;
}

/* One header line at `p` (before `end`): name, value; returns the start of the next line, or
 * NULL when the line is outside the subset. At the blank line ending the head, sets
 * *name->p = NULL and returns the position after it. */
static const char *header_line(const char *p, const char *end, span *name, span *value)
{
    if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
        name->p = NULL;
        return p + 2;
    }
    const char *s = p;
    while (p < end && is_tchar[(unsigned char)*p])
        p++;
    if (p == s || p >= end || *p != ':')
        return NULL;
    name->p = s;
    name->n = p - s;
    p++;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    s = p;
    while (p < end && is_vchar[(unsigned char)*p])
        p++;
    if (p == s || end - p < 2 || p[0] != '\r' || p[1] != '\n')
        return NULL;
    if (p[-1] == ' ' || p[-1] == '\t')
        return NULL; /* trailing whitespace: leave it to httptools */
    value->p = s;
    value->n = p - s;
    return p + 2;
}

static PyObject *method_object(const char *p, Py_ssize_t n)
{
    switch (n) {
    case 3:
        if (memcmp(p, "GET", 3) == 0)
            return M_GET;
        if (memcmp(p, "PUT", 3) == 0)
            return M_PUT;
        return NULL;
    case 4:
        if (memcmp(p, "HEAD", 4) == 0)
            return M_HEAD;
        if (memcmp(p, "POST", 4) == 0)
            return M_POST;
        return NULL;
    case 5:
        return memcmp(p, "PATCH", 5) == 0 ? M_PATCH : NULL;
    case 6:
        return memcmp(p, "DELETE", 6) == 0 ? M_DELETE : NULL;
    case 7:
        return memcmp(p, "OPTIONS", 7) == 0 ? M_OPTIONS : NULL;
    default:
        return NULL;
    }
}

static inline char *put(char *o, const char *s, Py_ssize_t n)
{
    memcpy(o, s, (size_t)n);
    return o + n;
}

#define PUTLIT(o, lit) put(o, lit, (Py_ssize_t)sizeof(lit) - 1)

/* Joined values of a repeated header (Cookie with "; ", X-Forwarded-For with ", "). */
static Py_ssize_t joined_len(const span *v, int n, Py_ssize_t sep)
{
    Py_ssize_t len = 0;
    for (int i = 0; i < n; i++)
        len += v[i].n + (i ? sep : 0);
    return len;
}

static char *put_joined(char *o, const span *v, int n, const char *sep, Py_ssize_t seplen)
{
    for (int i = 0; i < n; i++) {
        if (i)
            o = put(o, sep, seplen);
        o = put(o, v[i].p, v[i].n);
    }
    return o;
}

static PyObject *fast_request(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if ((nargs != 4 && nargs != 5) || !PyBytes_CheckExact(args[0]) ||
        !PyBytes_CheckExact(args[1]) || (nargs == 5 && !PyBytes_CheckExact(args[4]))) {
        PyErr_SetString(PyExc_TypeError, "request(data: bytes, peer: bytes, max_line, max_header"
                                         "[, forwarded: bytes])");
        return NULL;
    }
    /* the lines after X-Forwarded-For (CRLF-terminated): X-Forwarded-Proto, and on a TLS
       listener the client certificate's subject (quiesce.dataplane.tls) */
    const char *fwd = "X-Forwarded-Proto: http\r\n";
    Py_ssize_t fwd_n = 25;
    if (nargs == 5) {
        fwd = PyBytes_AS_STRING(args[4]);
        fwd_n = PyBytes_GET_SIZE(args[4]);
    }
    Py_ssize_t max_line = PyLong_AsSsize_t(args[2]);
    Py_ssize_t max_header = PyLong_AsSsize_t(args[3]);
    if ((max_line == -1 || max_header == -1) && PyErr_Occurred())
        return NULL;
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    if (max_line < 0 || max_header < 0)
        Py_RETURN_NONE;
    /* len > max_line + max_header, without overflowing */
    if (len < 18 || len - max_line > max_header || memcmp(buf + len - 4, "\r\n\r\n", 4) != 0)
        Py_RETURN_NONE;
    const char *end = buf + len;
    const char *p = buf;

    /* request line */
    while (p < end && *p >= 'A' && *p <= 'Z')
        p++;
    PyObject *method = method_object(buf, p - buf);
    if (method == NULL || p >= end || *p != ' ')
        Py_RETURN_NONE;
    span url = {++p, 0};
    if (p >= end || *p != '/')
        Py_RETURN_NONE;
    while (p < end && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f)
        p++;
    url.n = p - url.p;
    if (url.n > max_line || end - p < 11 || memcmp(p, " HTTP/1.", 8) != 0)
        Py_RETURN_NONE;
    int http10;
    if (p[8] == '1')
        http10 = 0;
    else if (p[8] == '0')
        http10 = 1;
    else
        Py_RETURN_NONE;
    if (p[9] != '\r' || p[10] != '\n')
        Py_RETURN_NONE;
    p += 11;

    /* header block */
    fields f;
    span cookies[MAX_JOINED], xffs[MAX_JOINED];
    int ncookie = 0, nxff = 0, seen_length = 0;
    f.n = f.conn = 0;
    span host = {NULL, 0};
    Py_ssize_t header_size = 0;
    for (;;) {
        span name, value;
        p = header_line(p, end, &name, &value);
        if (p == NULL)
            Py_RETURN_NONE;
        if (name.p == NULL)
            break;
        header_size += name.n + value.n + 4;
        if (header_size > max_header)
            Py_RETURN_NONE;
        int kind = request_kind(name.p, name.n);
        switch (kind) {
        case H_HOST:
            if (host.p != NULL)
                Py_RETURN_NONE;
            host = value;
            kind = H_FORWARD;
            break;
        case H_LENGTH:
            /* a second one is refused by httptools, even when equal */
            if (seen_length || value.n != 1 || value.p[0] != '0')
                Py_RETURN_NONE;
            seen_length = 1;
            kind = H_FORWARD;
            break;
        case H_COOKIE:
            if (ncookie == MAX_JOINED)
                Py_RETURN_NONE;
            cookies[ncookie++] = value;
            kind = H_FORWARD;
            break;
        case H_XFF:
            if (nxff == MAX_JOINED)
                Py_RETURN_NONE;
            xffs[nxff++] = value;
            kind = H_DROP; /* replaced by ours */
            break;
        default:
            break;
        }
        if (take(&f, kind, name, value) < 0)
            Py_RETURN_NONE;
    }
    int keep_alive = keep_alive_of(http10, f.conn);
    if (p != end || keep_alive < 0)
        Py_RETURN_NONE;

    const char *peer = PyBytes_AS_STRING(args[1]);
    Py_ssize_t peer_n = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t method_n = PyBytes_GET_SIZE(method);
    Py_ssize_t size = method_n + 1 + url.n + 11 + fields_size(&f);
    size += 17 + (nxff ? joined_len(xffs, nxff, 2) + 2 : 0) + peer_n + 2;
    size += fwd_n;
    if (host.p != NULL)
        size += 18 + host.n + 2;
    size += 2;

    PyObject *head = PyBytes_FromStringAndSize(NULL, size);
    if (head == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(head);
    o = put(o, PyBytes_AS_STRING(method), method_n);
    *o++ = ' ';
    o = put(o, url.p, url.n);
    o = PUTLIT(o, " HTTP/1.1\r\n");
    o = put_fields(o, &f);
    o = PUTLIT(o, "X-Forwarded-For: ");
    if (nxff) {
        o = put_joined(o, xffs, nxff, ", ", 2);
        o = PUTLIT(o, ", ");
    }
    o = put(o, peer, peer_n);
    o = PUTLIT(o, "\r\n");
    o = put(o, fwd, fwd_n);
    if (host.p != NULL) {
        o = PUTLIT(o, "X-Forwarded-Host: ");
        o = put(o, host.p, host.n);
        o = PUTLIT(o, "\r\n");
    }
    o = PUTLIT(o, "\r\n");
    if (o != PyBytes_AS_STRING(head) + size) {
        Py_DECREF(head);
        PyErr_SetString(PyExc_SystemError, "httpfast: request head size mismatch");
        return NULL;
    }

    PyObject *url_obj = NULL, *host_obj = NULL, *cookie_obj = NULL;
    url_obj = PyBytes_FromStringAndSize(url.p, url.n);
    if (url_obj == NULL)
        goto fail;
    if (host.p != NULL) {
        host_obj = PyBytes_FromStringAndSize(host.p, host.n);
        if (host_obj == NULL)
            goto fail;
    } else {
        host_obj = Py_NewRef(Py_None);
    }
    if (ncookie) {
        cookie_obj = PyBytes_FromStringAndSize(NULL, joined_len(cookies, ncookie, 2));
        if (cookie_obj == NULL)
            goto fail;
        put_joined(PyBytes_AS_STRING(cookie_obj), cookies, ncookie, "; ", 2);
    } else {
        cookie_obj = Py_NewRef(Py_None);
    }
    PyObject *result = PyTuple_New(7);
    if (result == NULL)
        goto fail;
    PyTuple_SET_ITEM(result, 0, Py_NewRef(method));
    PyTuple_SET_ITEM(result, 1, url_obj);
    PyTuple_SET_ITEM(result, 2, PyBool_FromLong(http10));
    PyTuple_SET_ITEM(result, 3, PyBool_FromLong(keep_alive));
    PyTuple_SET_ITEM(result, 4, host_obj);
    PyTuple_SET_ITEM(result, 5, cookie_obj);
    PyTuple_SET_ITEM(result, 6, head);
    return result;
fail:
    Py_XDECREF(url_obj);
    Py_XDECREF(host_obj);
    Py_XDECREF(cookie_obj);
    Py_DECREF(head);
    return NULL;
}

static PyObject *fast_response(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "response(data: bytes, max_header, extra: bytes)");
        return NULL;
    }
    Py_ssize_t max_header = PyLong_AsSsize_t(args[1]);
    if (max_header == -1 && PyErr_Occurred())
        return NULL;
    const char *buf = PyBytes_AS_STRING(args[0]);
    Py_ssize_t len = PyBytes_GET_SIZE(args[0]);
    const char *end = buf + len;
    if (len < 19 || memcmp(buf, "HTTP/1.", 7) != 0)
        Py_RETURN_NONE;
    int http10;
    if (buf[7] == '1')
        http10 = 0;
    else if (buf[7] == '0')
        http10 = 1;
    else
        Py_RETURN_NONE;
    const char *p = buf + 8;
    if (p[0] != ' ' || p[1] < '2' || p[1] > '5' || p[2] < '0' || p[2] > '9' || p[3] < '0' ||
        p[3] > '9' || p[4] != ' ')
        Py_RETURN_NONE;
    int status = (p[1] - '0') * 100 + (p[2] - '0') * 10 + (p[3] - '0');
    if (status == 204 || status == 304)
        Py_RETURN_NONE;
    p += 5;
    span reason = {p, 0};
    while (p < end && is_vchar[(unsigned char)*p])
        p++;
    reason.n = p - reason.p;
    if (reason.n == 0 || end - p < 2 || p[0] != '\r' || p[1] != '\n')
        Py_RETURN_NONE;
    p += 2;

    fields f;
    f.n = f.conn = 0;
    Py_ssize_t length = -1;
    for (;;) {
        span name, value;
        p = header_line(p, end, &name, &value);
        if (p == NULL || p - buf > max_header)
            Py_RETURN_NONE;
        if (name.p == NULL)
            break;
        int kind = response_kind(name.p, name.n);
        if (kind == H_LENGTH) {
            if (length >= 0 || value.n > 15)
                Py_RETURN_NONE;
            Py_ssize_t v = 0;
            for (Py_ssize_t i = 0; i < value.n; i++) {
                if (value.p[i] < '0' || value.p[i] > '9')
                    Py_RETURN_NONE;
                v = v * 10 + (value.p[i] - '0');
            }
            length = v;
            kind = H_FORWARD;
        }
        if (take(&f, kind, name, value) < 0)
            Py_RETURN_NONE;
    }
    int keep_alive = keep_alive_of(http10, f.conn);
    if (length < 0 || end - p != length || keep_alive < 0)
        Py_RETURN_NONE;

    const char *extra = PyBytes_AS_STRING(args[2]);
    Py_ssize_t extra_n = PyBytes_GET_SIZE(args[2]);
    Py_ssize_t size = 13 + reason.n + 2 + fields_size(&f) + extra_n + 2 + length;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL)
        return NULL;
    char *o = PyBytes_AS_STRING(out);
    o = PUTLIT(o, "HTTP/1.1 ");
    o = put(o, buf + 9, 3);
    *o++ = ' ';
    o = put(o, reason.p, reason.n);
    o = PUTLIT(o, "\r\n");
    o = put_fields(o, &f);
    o = put(o, extra, extra_n);
    o = PUTLIT(o, "\r\n");
    o = put(o, p, length);
    if (o != PyBytes_AS_STRING(out) + size) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "httpfast: response size mismatch");
        return NULL;
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, PyLong_FromLong(status));
    PyTuple_SET_ITEM(result, 1, PyBool_FromLong(keep_alive));
    PyTuple_SET_ITEM(result, 2, out);
    return result;
}

/* ---- traffic counters ------------------------------------------------------------------ */

#define DECAY (1.0 - 1.0 / 1024.0) /* quiesce.state.traffic.DECAY */

typedef struct {
    PyObject_HEAD
    long long bytes_in, bytes_out, timed, ctime_at;
    double rtime_sum, ttime_sum, ctime_sum;
} TrafficObject;

static PyMemberDef traffic_members[] = {
    {"bytes_in", T_LONGLONG, offsetof(TrafficObject, bytes_in), 0, "bytes from clients"},
    {"bytes_out", T_LONGLONG, offsetof(TrafficObject, bytes_out), 0, "bytes to clients"},
    {"timed", T_LONGLONG, offsetof(TrafficObject, timed), 0, "requests timed"},
    {"ctime_at", T_LONGLONG, offsetof(TrafficObject, ctime_at), 0, "ctime_sum as of"},
    {"rtime_sum", T_DOUBLE, offsetof(TrafficObject, rtime_sum), 0, "decayed sum, s"},
    {"ttime_sum", T_DOUBLE, offsetof(TrafficObject, ttime_sum), 0, "decayed sum, s"},
    {"ctime_sum", T_DOUBLE, offsetof(TrafficObject, ctime_sum), 0, "lazily decayed sum, s"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject TrafficType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "quiesce._httpfast.Traffic",
    .tp_basicsize = sizeof(TrafficObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Traffic() -> one server's or service's bytes and time sums, all 0",
    .tp_members = traffic_members,
    .tp_new = PyType_GenericNew,
};

/* account(server, service, nin, nout, rtime, ttime): nin/nout client bytes to both records
 * (server may be None); rtime >= 0: a timed request, its response and total times (s) to the
 * server's running sums. */
static PyObject *account(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "account() takes 6 arguments");
        return NULL;
    }
    PyObject *server = args[0], *service = args[1];
    long long nin = PyLong_AsLongLong(args[2]);
    long long nout = PyLong_AsLongLong(args[3]);
    double rtime = PyFloat_AsDouble(args[4]);
    double ttime = PyFloat_AsDouble(args[5]);
    if (PyErr_Occurred())
        return NULL;
    if ((server != Py_None && !Py_IS_TYPE(server, &TrafficType)) ||
        !Py_IS_TYPE(service, &TrafficType)) {
        PyErr_SetString(PyExc_TypeError, "account() takes Traffic records");
        return NULL;
    }
    TrafficObject *v = (TrafficObject *)service;
    v->bytes_in += nin;
    v->bytes_out += nout;
    if (server != Py_None) {
        TrafficObject *s = (TrafficObject *)server;
        s->bytes_in += nin;
        s->bytes_out += nout;
        if (rtime >= 0.0) {
            s->timed += 1;
            s->rtime_sum = s->rtime_sum * DECAY + rtime;
            s->ttime_sum = s->ttime_sum * DECAY + ttime;
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"request", (PyCFunction)(void (*)(void))fast_request, METH_FASTCALL,
     "request(data, peer, max_line, max_header[, forwarded]) -> (method, url, http10, "
     "keep_alive, host, "
     "cookie, head) | None"},
    {"response", (PyCFunction)(void (*)(void))fast_response, METH_FASTCALL,
     "response(data, max_header, extra) -> (status, keep_alive, out) | None"},
    {"account", (PyCFunction)(void (*)(void))account, METH_FASTCALL,
     "account(server, service, nin, nout, rtime, ttime) -> None"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "quiesce._httpfast", "The L7 proxy's common-case message heads.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__httpfast(void)
{
    const char *tchars = "!#$%&'*+-.^_`|~";
    for (int c = '0'; c <= '9'; c++)
        is_tchar[c] = 1;
    for (int c = 'a'; c <= 'z'; c++)
        is_tchar[c] = is_tchar[c - 32] = 1;
    for (const char *t = tchars; *t; t++)
        is_tchar[(unsigned char)*t] = 1;
    for (int c = 0x20; c < 0x7f; c++)
        is_vchar[c] = 1;
    is_vchar['\t'] = 1;
    PyObject **slots[] = {&M_GET, &M_HEAD, &M_POST, &M_PUT, &M_DELETE, &M_OPTIONS, &M_PATCH};
    const char *names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"};
    for (int i = 0; i < 7; i++) {
        if (*slots[i] == NULL) {
            *slots[i] = PyBytes_FromString(names[i]);
            if (*slots[i] == NULL)
                return NULL;
        }
    }
    if (PyType_Ready(&TrafficType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TrafficType);
    if (PyModule_AddObject(m, "Traffic", (PyObject *)&TrafficType) < 0) {
        Py_DECREF(&TrafficType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
