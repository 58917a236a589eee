/*
 * Tests of libexoservice over NATS, against a real nats-server.
 *
 * The program starts nats-server with JetStream (env NATS_SERVER_BIN, else
 * `nats-server` on the PATH, else /usr/sbin/nats-server) on a free port of
 * 127.0.0.1, and runs two C services in threads of their own: "users",
 * which receives users.create at-least-once and fails its first attempt
 * (exo_ctx_fail), and "web", which sends users.create and receives the
 * reply. The handlers are the ones an ExoCom service has: the transport,
 * the routes and the delivery modes come from the environment
 * (EXOSERVICE_TRANSPORT, NATS_URL, EXOSERVICE_APP, EXOSERVICE_ROUTES,
 * EXOSERVICE_REDELIVERY_DELAY_MS, ROLE).
 *
 * Usage: test_nats
 * Library logs (stderr) go to $EXO_TEST_LOG (default: a file in the temp
 * directory); results go to stdout, ending with "N passed, M failed".
 * EXO_TEST_TIMEOUT sets the watchdog in seconds (default 60).
 */
#define _XOPEN_SOURCE 700

#include <exoservice.h>

#include <pthread.h>
#include <sys/wait.h>

#include "test_support.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* Whether something accepts connections on 127.0.0.1:port. */
static int accepts(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* ------------------------------------------------------------------ */
/* nats-server                                                         */

static int nats_port;

/* Starts nats-server on `port`; whether it accepts connections within 10 s. */
static int try_start_nats(int port) {
    char port_text[16], store[400], out[400];
    snprintf(port_text, sizeof port_text, "%d", port);
    snprintf(store, sizeof store, "%s/jetstream", tmp_dir);
    snprintf(out, sizeof out, "%s/nats-%d.log", tmp_dir, port);
    const char *bin = getenv("NATS_SERVER_BIN");
    char *argv[] = {"nats-server", "-a", "127.0.0.1", "-p", port_text, "-js", "-sd", store, NULL};
    server_pid = fork();
    if (server_pid < 0) die("fork: %s", strerror(errno));
    if (server_pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        if (bin && *bin) {
            execv(bin, argv);
        } else {
            execvp("nats-server", argv);
            execv("/usr/sbin/nats-server", argv);
        }
        _exit(127);
    }
    long long deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        int status;
        if (waitpid(server_pid, &status, WNOHANG) == server_pid) {
            server_pid = -1;
            return 0;
        }
        if (accepts(port)) return 1;
        sleep_ms(50);
    }
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
    return 0;
}

static void start_nats(void) {
    for (int i = 0; i < 3; i++) {
        int port = free_port();
        if (try_start_nats(port)) {
            nats_port = port;
            return;
        }
    }
    die("nats-server did not start on any of 3 ports (NATS_SERVER_BIN, PATH or "
        "/usr/sbin/nats-server; its output is in %s)", tmp_dir);
}

static void stop_nats(void) {
    if (server_pid <= 0) return;
    kill(server_pid, SIGTERM);
    waitpid(server_pid, NULL, 0);
    server_pid = -1;
}

/* ------------------------------------------------------------------ */
/* The services                                                        */

#define REDELIVERY_DELAY_MS 100

static const char *routes =
    "{\"users\":{\"receives\":[\"users.create\"],\"sends\":[\"users.created\"],"
    "\"atLeastOnce\":[\"users.create\"]},"
    "\"web\":{\"receives\":[\"users.created\"],\"sends\":[\"users.create\"]}}";

static struct {
    pthread_mutex_t mu;
    unsigned attempts[16];
    int n_attempts;
    char created[16][256];
    int n_created;
} seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* users.create: fails the first attempt, replies on the next. */
static void on_create(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)payload_json, (void)user;
    unsigned attempt = exo_ctx_delivery_attempt(ctx);
    pthread_mutex_lock(&seen.mu);
    if (seen.n_attempts < 16) seen.attempts[seen.n_attempts++] = attempt;
    pthread_mutex_unlock(&seen.mu);
    if (attempt == 1) {
        if (exo_ctx_fail(ctx) != EXO_OK) fprintf(stderr, "fail failed: %s\n", exo_last_error());
        return;
    }
    char reply[128];
    snprintf(reply, sizeof reply, "{\"attempt\":%u}", attempt);
    if (exo_reply(ctx, "users.created", reply) != EXO_OK)
        fprintf(stderr, "reply failed: %s\n", exo_last_error());
}

/* users.created, at the web service. */
static void on_created(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)ctx, (void)user;
    pthread_mutex_lock(&seen.mu);
    if (seen.n_created < 16)
        snprintf(seen.created[seen.n_created++], sizeof seen.created[0], "%s", payload_json);
    pthread_mutex_unlock(&seen.mu);
}

static int created_count(void) {
    pthread_mutex_lock(&seen.mu);
    int n = seen.n_created;
    pthread_mutex_unlock(&seen.mu);
    return n;
}

/* A service of `dir` (role from $ROLE, or `role` when given), not yet run. */
static exo_service *new_service(const char *dir, const char *role) {
    exo_options *opts = exo_options_new();
    exo_options_set_dir(opts, dir);
    if (role) exo_options_set_role(opts, role);
    exo_options_set_handle_signals(opts, false);
    exo_options_set_announce_online(opts, false);
    exo_options_set_drain_timeout_ms(opts, 2000);
    exo_service *svc = exo_service_new_with(opts);
    exo_options_free(opts);
    return svc;
}

static void stop_service(exo_service *svc, pthread_t thread) {
    exo_service_stop(svc);
    void *rc;
    pthread_join(thread, &rc);
    CHECK((intptr_t)rc == EXO_OK, "run returned %s", exo_status_name((int)(intptr_t)rc));
    exo_service_free(svc);
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */

static void test_null_ctx(void) {
    CHECK(exo_ctx_delivery_attempt(NULL) == 0, "delivery attempt of NULL");
    CHECK(strstr(exo_last_error(), "exo_ctx_delivery_attempt: ctx is NULL") != NULL,
          "error text: %s", exo_last_error());
}

static void test_failed_message_comes_again(void) {
    char url[64], app[64], delay[16];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", nats_port);
    snprintf(app, sizeof app, "c-%ld-%lld", (long)getpid(), now_ms());
    snprintf(delay, sizeof delay, "%d", REDELIVERY_DELAY_MS);
    setenv("EXOSERVICE_TRANSPORT", "nats", 1);
    setenv("NATS_URL", url, 1);
    setenv("EXOSERVICE_APP", app, 1);
    setenv("EXOSERVICE_ROUTES", routes, 1);
    setenv("EXOSERVICE_REDELIVERY_DELAY_MS", delay, 1);
    setenv("ROLE", "users", 1);

    const char *users_dir = service_dir("users", "type: users\n"
                                                 "messages:\n"
                                                 "  receives: [users.create]\n"
                                                 "  sends: [users.created]\n");
    const char *web_dir = service_dir("web", "type: web\n"
                                             "messages:\n"
                                             "  receives: [users.created]\n"
                                             "  sends: [users.create]\n");
    exo_service *users = new_service(users_dir, NULL); /* ROLE=users */
    if (!users) die("users: %s", exo_last_error());
    exo_service *web = new_service(web_dir, "web");
    if (!web) die("web: %s", exo_last_error());
    CHECK(strcmp(exo_service_role(users), "users") == 0, "role %s", exo_service_role(users));
    CHECK(strcmp(exo_service_role(web), "web") == 0, "role %s", exo_service_role(web));
    CHECK_RC(exo_service_on(users, "users.create", on_create, NULL), EXO_OK);
    CHECK_RC(exo_service_on(web, "users.created", on_created, NULL), EXO_OK);

    pthread_t users_thread, web_thread;
    pthread_create(&users_thread, NULL, run_service, users);
    pthread_create(&web_thread, NULL, run_service, web);
    CHECK_RC(exo_service_wait_online(users, 20000), EXO_OK);
    CHECK_RC(exo_service_wait_online(web, 20000), EXO_OK);

    CHECK_RC(exo_send(web, "users.create", "{\"name\":\"ann\"}"), EXO_OK);
    long long deadline = now_ms() + 15000;
    while (created_count() < 1 && now_ms() < deadline) sleep_ms(20);
    CHECK(created_count() >= 1, "no users.created within 15 s");
    /* Nothing polls for "no more": give a third attempt (due 2 delays after
     * the second) and a second reply time to show up, bounded. */
    sleep_ms(REDELIVERY_DELAY_MS * 5);

    pthread_mutex_lock(&seen.mu);
    CHECK(seen.n_attempts == 2 && seen.attempts[0] == 1 && seen.attempts[1] == 2,
          "the handler saw %d attempts: %u, %u", seen.n_attempts,
          seen.n_attempts > 0 ? seen.attempts[0] : 0, seen.n_attempts > 1 ? seen.attempts[1] : 0);
    CHECK(seen.n_created == 1, "users.created arrived %d times", seen.n_created);
    CHECK(seen.n_created < 1 || strcmp(seen.created[0], "{\"attempt\":2}") == 0,
          "users.created payload %s", seen.created[0]);
    pthread_mutex_unlock(&seen.mu);

    stop_service(web, web_thread);
    stop_service(users, users_thread);
}

int main(void) {
    tests_begin("exoservice-c-nats", " over NATS", 60);

    start_nats();
    printf("nats-server on port %d\n", nats_port);

    run_test("exo_ctx_delivery_attempt of NULL is 0, with an error", test_null_ctx);
    run_test("a failed at-least-once message comes again with its attempt",
             test_failed_message_comes_again);

    stop_nats();
    return tests_end();
}
