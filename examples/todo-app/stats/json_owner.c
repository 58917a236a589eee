#include "json_owner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
    return p;
}

/* Reads a JSON string at p (which points at '"'); returns the end (after
 * the closing quote) and, if out is given, the unescaped text (malloc'd). */
static const char *read_string(const char *p, char **out) {
    if (*p != '"') return NULL;
    p++;
    size_t cap = strlen(p) + 1, len = 0;
    char *buf = out ? malloc(cap) : NULL;
    if (out && !buf) return NULL;
    while (*p && *p != '"') {
        char c = *p++;
        if (c == '\\') {
            char e = *p++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    char h = *p++;
                    v <<= 4;
                    if (h >= '0' && h <= '9') v |= (unsigned)(h - '0');
                    else if (h >= 'a' && h <= 'f') v |= (unsigned)(h - 'a' + 10);
                    else if (h >= 'A' && h <= 'F') v |= (unsigned)(h - 'A' + 10);
                    else { free(buf); return NULL; }
                }
                /* Encode as UTF-8 (surrogate pairs are kept as two 3-byte
                 * sequences; owners are plain names in practice). */
                if (buf) {
                    if (v < 0x80) buf[len++] = (char)v;
                    else if (v < 0x800) {
                        buf[len++] = (char)(0xC0 | (v >> 6));
                        buf[len++] = (char)(0x80 | (v & 0x3F));
                    } else {
                        buf[len++] = (char)(0xE0 | (v >> 12));
                        buf[len++] = (char)(0x80 | ((v >> 6) & 0x3F));
                        buf[len++] = (char)(0x80 | (v & 0x3F));
                    }
                }
                continue;
            }
            case '\0': free(buf); return NULL;
            default: c = e; break; /* \" \\ \/ */
            }
        }
        if (buf) buf[len++] = c;
    }
    if (*p != '"') { free(buf); return NULL; }
    if (buf) { buf[len] = '\0'; *out = buf; }
    return p + 1;
}

/* Skips one JSON value at p; returns the end or NULL. */
static const char *skip_value(const char *p) {
    p = skip_ws(p);
    if (*p == '"') return read_string(p, NULL);
    if (*p == '{' || *p == '[') {
        char open = *p, close = open == '{' ? '}' : ']';
        p = skip_ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (open == '{') {
                p = read_string(skip_ws(p), NULL);
                if (!p) return NULL;
                p = skip_ws(p);
                if (*p++ != ':') return NULL;
            }
            p = skip_value(p);
            if (!p) return NULL;
            p = skip_ws(p);
            if (*p == ',') { p++; continue; }
            if (*p == close) return p + 1;
            return NULL;
        }
    }
    /* number, true, false, null */
    const char *start = p;
    while (*p && !strchr(",}] \t\r\n", *p)) p++;
    return p == start ? NULL : p;
}

char *json_string_field(const char *json, const char *key) {
    const char *p = skip_ws(json);
    if (*p != '{') return NULL;
    p = skip_ws(p + 1);
    if (*p == '}') return NULL;
    for (;;) {
        char *k = NULL;
        p = read_string(skip_ws(p), &k);
        if (!p) return NULL;
        p = skip_ws(p);
        if (*p++ != ':') { free(k); return NULL; }
        p = skip_ws(p);
        int match = strcmp(k, key) == 0;
        free(k);
        if (match) {
            char *v = NULL;
            if (*p == '"' && read_string(p, &v)) return v;
            return NULL;
        }
        p = skip_value(p);
        if (!p) return NULL;
        p = skip_ws(p);
        if (*p == ',') { p++; continue; }
        return NULL;
    }
}

size_t json_write_string(char *out, size_t cap, const char *s) {
    size_t len = 0;
#define PUT(ch) do { if (len + 1 < cap) out[len] = (ch); len++; } while (0)
    PUT('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') { PUT('\\'); PUT((char)*p); }
        else if (*p < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            for (char *e = esc; *e; e++) PUT(*e);
        } else PUT((char)*p);
    }
    PUT('"');
#undef PUT
    out[len < cap ? len : cap - 1] = '\0';
    return len < cap ? len : cap - 1;
}
