/*
 * The stats service: counts each person's todos from the broadcasts.
 *
 *   todo.added   {owner, ...}  (the copy every receiver gets) -> count + 1
 *   todo.deleted {owner, ...}                                 -> count - 1
 *   stats.get    {}            -> stats.details {"counts": {"alice": 2, ...}}
 *
 * Counts live in memory: they cover what happened since the service started.
 */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include <exoservice.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_owner.h"

#define MAX_PEOPLE 1024

struct count {
    char *owner;
    long n;
};

static struct count counts[MAX_PEOPLE];
static size_t people;

static struct count *find(const char *owner, int create) {
    for (size_t i = 0; i < people; i++)
        if (strcmp(counts[i].owner, owner) == 0) return &counts[i];
    if (!create || people == MAX_PEOPLE) return NULL;
    counts[people].owner = strdup(owner);
    if (!counts[people].owner) return NULL;
    counts[people].n = 0;
    return &counts[people++];
}

static void change(const char *payload_json, long by, const char *what) {
    char *owner = json_string_field(payload_json, "owner");
    if (!owner) {
        fprintf(stderr, "stats: %s without a string \"owner\": %s\n", what, payload_json);
        return;
    }
    struct count *c = find(owner, 1);
    if (c) {
        c->n += by;
        if (c->n < 0) c->n = 0;
    } else {
        fprintf(stderr, "stats: cannot count %s: too many people\n", owner);
    }
    free(owner);
}

static void on_added(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)ctx, (void)user;
    change(payload_json, +1, "todo.added");
}

static void on_deleted(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)ctx, (void)user;
    change(payload_json, -1, "todo.deleted");
}

static void on_get(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)payload_json, (void)user;
    size_t cap = 64, len = 0;
    for (size_t i = 0; i < people; i++) cap += 6 * strlen(counts[i].owner) + 32;
    char *out = malloc(cap);
    if (!out) {
        fprintf(stderr, "stats: out of memory\n");
        return;
    }
    len += (size_t)snprintf(out + len, cap - len, "{\"counts\":{");
    for (size_t i = 0; i < people; i++) {
        len += (size_t)snprintf(out + len, cap - len, "%s", i ? "," : "");
        len += json_write_string(out + len, cap - len, counts[i].owner);
        len += (size_t)snprintf(out + len, cap - len, ":%ld", counts[i].n);
    }
    snprintf(out + len, cap - len, "}}");
    if (exo_reply(ctx, "stats.details", out) != EXO_OK)
        fprintf(stderr, "stats: reply failed: %s\n", exo_last_error());
    free(out);
}

int main(void) {
    exo_service *svc = exo_service_new(NULL);
    if (!svc) {
        fprintf(stderr, "stats: %s\n", exo_last_error());
        return 1;
    }
    if (exo_service_on(svc, "todo.added", on_added, NULL) != EXO_OK ||
        exo_service_on(svc, "todo.deleted", on_deleted, NULL) != EXO_OK ||
        exo_service_on(svc, "stats.get", on_get, NULL) != EXO_OK) {
        fprintf(stderr, "stats: %s\n", exo_last_error());
        exo_service_free(svc);
        return 1;
    }
    int rc = exo_service_run(svc);
    if (rc != EXO_OK) fprintf(stderr, "stats: %s\n", exo_last_error());
    exo_service_free(svc);
    for (size_t i = 0; i < people; i++) free(counts[i].owner);
    return rc == EXO_OK ? 0 : 1;
}
