/*
 * The C caller of the cross-language matrix (tests/matrix.rs).
 *
 * Usage: caller TIMEOUT_MS AUTH_JSON PAYLOAD_FILE...
 *
 * Runs in tests/matrix (service.yml) with ROLE, EXOCOM_HOST and EXOCOM_PORT
 * set; requests `ping` once per payload file, carrying AUTH_JSON, and prints
 * one line per request: `RESULT {"ok": true, "name", "payload", "auth",
 * "elapsed_ms"}`, or `RESULT {"ok": false, "error": "timeout" | "other",
 * "type", "message", "elapsed_ms"}`. Payloads pass through as JSON text
 * (line breaks between tokens printed as spaces).
 */
#define _POSIX_C_SOURCE 200809L
#include <exoservice.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len - 1 == 0) {
            char *bigger = realloc(buf, cap * 2);
            if (!bigger) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf) buf[len] = 0;
    return buf;
}

/* Prints `s` as a JSON string. */
static void put_json_string(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            putchar('\\');
            putchar(*p);
        } else if (*p < 0x20) {
            printf("\\u%04x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

/* Prints JSON text on one line: a line break in valid JSON text can only
 * be whitespace between tokens (inside strings it is escaped). */
static void put_json_line(const char *json) {
    for (const char *p = json; *p; p++) putchar(*p == '\n' || *p == '\r' ? ' ' : *p);
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s TIMEOUT_MS AUTH_JSON PAYLOAD_FILE...\n", argv[0]);
        return 2;
    }
    int timeout_ms = atoi(argv[1]);
    const char *auth = argv[2];

    exo_options *opts = exo_options_new();
    if (!opts || exo_options_set_handle_signals(opts, false) != EXO_OK) {
        fprintf(stderr, "caller: %s\n", exo_last_error());
        return 1;
    }
    exo_service *svc = exo_service_new_with(opts); /* ./service.yml + env */
    exo_options_free(opts);
    if (!svc) {
        fprintf(stderr, "caller: %s\n", exo_last_error());
        return 1;
    }
    if (exo_service_start(svc) != EXO_OK || exo_service_wait_online(svc, 10000) != EXO_OK) {
        fprintf(stderr, "caller: cannot start: %s\n", exo_last_error());
        exo_service_free(svc);
        return 1;
    }
    int failed = 0;
    for (int i = 3; i < argc; i++) {
        char *payload = read_file(argv[i]);
        if (!payload) {
            fprintf(stderr, "caller: cannot read %s\n", argv[i]);
            failed = 1;
            break;
        }
        char *name = NULL, *reply = NULL, *reply_auth = NULL;
        long long started = now_ms();
        int rc = exo_request_with_auth(svc, "ping", payload, auth, timeout_ms, &name, &reply,
                                       &reply_auth);
        long long elapsed = now_ms() - started;
        free(payload);
        if (rc == EXO_OK) {
            fputs("RESULT {\"ok\":true,\"name\":", stdout);
            put_json_string(name);
            fputs(",\"payload\":", stdout);
            put_json_line(reply);
            fputs(",\"auth\":", stdout);
            put_json_line(reply_auth ? reply_auth : "null");
            printf(",\"elapsed_ms\":%lld}\n", elapsed);
        } else {
            printf("RESULT {\"ok\":false,\"error\":\"%s\",\"type\":\"%s\",\"message\":",
                   rc == EXO_ERR_TIMEOUT ? "timeout" : "other", exo_status_name(rc));
            put_json_string(exo_last_error());
            printf(",\"elapsed_ms\":%lld}\n", elapsed);
        }
        fflush(stdout);
        exo_string_free(name);
        exo_string_free(reply);
        exo_string_free(reply_auth);
    }
    exo_service_free(svc); /* stops, drains, leaves the bus */
    return failed;
}
