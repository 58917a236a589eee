/*
 * The ping service in C: answers `ping` with `pong`, echoing the payload.
 *
 * Run it inside an app with `exo run`, or on its own against a running bus:
 *     make && EXOCOM_PORT=3100 ./c-ping
 * It reads ./service.yml; ROLE, EXOCOM_HOST and EXOCOM_PORT override it.
 * SIGINT or SIGTERM stop it after the replies in flight went out.
 */
#include <exoservice.h>
#include <stdio.h>

static void on_ping(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)user;
    if (exo_reply(ctx, "pong", payload_json) != EXO_OK)
        fprintf(stderr, "c-ping: reply failed: %s\n", exo_last_error());
}

int main(void) {
    exo_service *svc = exo_service_new(NULL); /* ./service.yml + env */
    if (!svc) {
        fprintf(stderr, "c-ping: %s\n", exo_last_error());
        return 1;
    }
    if (exo_service_on(svc, "ping", on_ping, NULL) != EXO_OK) {
        fprintf(stderr, "c-ping: %s\n", exo_last_error());
        exo_service_free(svc);
        return 1;
    }
    int rc = exo_service_run(svc); /* blocks; SIGINT/SIGTERM drain */
    if (rc != EXO_OK) fprintf(stderr, "c-ping: %s\n", exo_last_error());
    exo_service_free(svc);
    return rc == EXO_OK ? 0 : 1;
}
