/*
 * Tests of libexoservice from C, against a real bus.
 *
 * The program starts the project's bus (`exocom`, env EXOCOM_BIN) on a free
 * port, runs a "tester" service in a thread of its own, and checks a
 * "c-test" service made with the library: handlers, reply, send, request,
 * timeouts, bad JSON, unknown messages, the poll loop, the before-all hook,
 * stopping from another thread and from signals, and a Rust caller
 * (`exo send`, env EXO_BIN) answered by the C service.
 *
 * Usage: EXOCOM_BIN=target/debug/exocom EXO_BIN=target/debug/exo test_exoservice
 * Library logs (stderr) go to $EXO_TEST_LOG (default: a file in the temp
 * directory); results go to stdout, ending with "N passed, M failed".
 * EXO_TEST_LOAD sets the number of requests of the load test (default 200);
 * EXO_TEST_TIMEOUT the watchdog in seconds (default 120).
 */
#define _XOPEN_SOURCE 700

#include <exoservice.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

#include "test_support.h"

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

/* Whether the library's log (our stderr) contains both texts on one line. */
static int log_has(const char *a, const char *b) {
    fflush(stderr);
    FILE *f = fopen(log_path, "r");
    if (!f) return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, a) && (!b || strstr(line, b));
    fclose(f);
    return found;
}

/* ------------------------------------------------------------------ */
/* The bus                                                             */

static const char *exocom_bin, *exo_bin;
static int bus_port;
static FILE *bus_out;
static pthread_t bus_drain;

#define C_TEST_RECEIVES "[ping, hello, ignored, slow, detach]"
#define C_TEST_SENDS "[pong, hello-seen, started, detached-pong]"
#define TESTER_RECEIVES "[pong, hello-seen, started, detached-pong]"
#define TESTER_SENDS "[ping, hello, ignored, slow, detach, nobody]"

static const char *routes =
    "{\"c-test\":{\"receives\":[\"ping\",\"hello\",\"ignored\",\"slow\",\"detach\"],"
    "\"sends\":[\"pong\",\"hello-seen\",\"started\",\"detached-pong\"]},"
    "\"tester\":{\"receives\":[\"pong\",\"hello-seen\",\"started\",\"detached-pong\"],"
    "\"sends\":[\"ping\",\"hello\",\"ignored\",\"slow\",\"detach\",\"nobody\"]},"
    "\"rust-caller\":{\"sends\":[\"ping\"],\"receives\":[\"pong\"]}}";

/* Copies the bus's output into our log so that nothing blocks it. */
static void *drain_bus(void *arg) {
    (void)arg;
    char line[4096];
    while (fgets(line, sizeof line, bus_out)) {
        fprintf(stderr, "[exocom] %s", line);
        fflush(stderr);
    }
    return NULL;
}

static void start_bus(void) {
    int fds[2];
    if (pipe(fds) != 0) die("pipe: %s", strerror(errno));
    static char service_data[2048];
    snprintf(service_data, sizeof service_data, "SERVICE_DATA=%s", routes);
    char *envp[] = {"PORT=0", service_data, "EXOCOM_BIND=127.0.0.1", "RUST_LOG=warn", NULL};
    char *argv[] = {(char *)exocom_bin, NULL};
    server_pid = fork();
    if (server_pid < 0) die("fork: %s", strerror(errno));
    if (server_pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execve(exocom_bin, argv, envp);
        _exit(127);
    }
    close(fds[1]);
    bus_out = fdopen(fds[0], "r");
    char line[1024];
    while (fgets(line, sizeof line, bus_out)) {
        fprintf(stderr, "[exocom] %s", line);
        if (sscanf(line, "ExoCom online at port %d", &bus_port) == 1) break;
    }
    if (bus_port <= 0) die("exocom (%s) did not come online", exocom_bin);
    pthread_create(&bus_drain, NULL, drain_bus, NULL);
}

static void stop_bus(void) {
    if (server_pid <= 0) return;
    kill(server_pid, SIGTERM);
    int status;
    waitpid(server_pid, &status, 0);
    server_pid = -1;
    pthread_join(bus_drain, NULL);
    fclose(bus_out);
}

/* ------------------------------------------------------------------ */
/* The tester: a second service that talks to c-test                   */

#define INBOX_SIZE 256

typedef struct {
    char name[64];
    char payload[512];
    char auth[256];
    char activity[64];
} received_t;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int count;
    received_t items[INBOX_SIZE];
} inbox = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void copy(char *dst, size_t size, const char *src) {
    snprintf(dst, size, "%s", src ? src : "");
}

static void tester_record(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)user;
    pthread_mutex_lock(&inbox.mu);
    if (inbox.count < INBOX_SIZE) {
        received_t *r = &inbox.items[inbox.count++];
        copy(r->name, sizeof r->name, exo_ctx_name(ctx));
        copy(r->payload, sizeof r->payload, payload_json);
        copy(r->auth, sizeof r->auth, exo_ctx_auth(ctx));
        copy(r->activity, sizeof r->activity, exo_ctx_activity_id(ctx));
    }
    pthread_cond_broadcast(&inbox.cv);
    pthread_mutex_unlock(&inbox.mu);
}

/* Waits for a message `name` whose payload contains `needle`; copies it out. */
static int inbox_wait(const char *name, const char *needle, long timeout_ms, received_t *out) {
    long long deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&inbox.mu);
    for (;;) {
        for (int i = 0; i < inbox.count; i++) {
            received_t *r = &inbox.items[i];
            if (strcmp(r->name, name) == 0 && (!needle || strstr(r->payload, needle))) {
                if (out) *out = *r;
                pthread_mutex_unlock(&inbox.mu);
                return 1;
            }
        }
        if (now_ms() >= deadline) break;
        pthread_mutex_unlock(&inbox.mu);
        sleep_ms(10);
        pthread_mutex_lock(&inbox.mu);
    }
    pthread_mutex_unlock(&inbox.mu);
    return 0;
}

static exo_service *tester;
static pthread_t tester_thread;

static void start_tester(void) {
    const char *dir = service_dir("tester", "type: tester\n"
                                            "messages:\n"
                                            "  receives: " TESTER_RECEIVES "\n"
                                            "  sends: " TESTER_SENDS "\n");
    exo_options *opts = exo_options_new();
    exo_options_set_dir(opts, dir);
    exo_options_set_exocom_host(opts, "127.0.0.1");
    exo_options_set_exocom_port(opts, bus_port);
    exo_options_set_handle_signals(opts, false); /* the signal tests stop c-test only */
    exo_options_set_announce_online(opts, false);
    tester = exo_service_new_with(opts);
    exo_options_free(opts);
    if (!tester) die("tester: %s", exo_last_error());
    const char *names[] = {"pong", "hello-seen", "started", "detached-pong"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (exo_service_on(tester, names[i], tester_record, NULL) != EXO_OK)
            die("tester on %s: %s", names[i], exo_last_error());
    pthread_create(&tester_thread, NULL, run_service, tester);
    if (exo_service_wait_online(tester, 10000) != EXO_OK) die("tester offline: %s", exo_last_error());
}

static void stop_tester(void) {
    exo_service_stop(tester);
    void *rc;
    pthread_join(tester_thread, &rc);
    exo_service_free(tester);
    tester = NULL;
}

/* ------------------------------------------------------------------ */
/* The service under test                                              */

static const char *c_test_yaml = "type: c-test\n"
                                 "description: the C binding's service under test\n"
                                 "messages:\n"
                                 "  receives: " C_TEST_RECEIVES "\n"
                                 "  sends: " C_TEST_SENDS "\n";

/* What c-test's handlers saw. */
static struct {
    atomic_int pings;
    pthread_t thread; /* the thread of the last handler call */
    int bad_reply_rc, undeclared_reply_rc, poll_inside_rc;
    char activity[64], sender[64], message_id[64], name[64];
    unsigned attempt;
    char hello_auth[256], hello_activity[64];
    int hello_security;
    pthread_t worker;
    atomic_int worker_started;
} seen;

static void on_ping(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)user;
    seen.thread = pthread_self();
    copy(seen.activity, sizeof seen.activity, exo_ctx_activity_id(ctx));
    copy(seen.sender, sizeof seen.sender, exo_ctx_sender(ctx));
    copy(seen.message_id, sizeof seen.message_id, exo_ctx_message_id(ctx));
    copy(seen.name, sizeof seen.name, exo_ctx_name(ctx));
    seen.attempt = exo_ctx_delivery_attempt(ctx);
    seen.bad_reply_rc = exo_reply(ctx, "pong", "{\"unclosed\": ");
    seen.undeclared_reply_rc = exo_reply(ctx, "not-declared", "{}");
    if (exo_reply(ctx, "pong", payload_json) != EXO_OK)
        fprintf(stderr, "reply failed: %s\n", exo_last_error());
    atomic_fetch_add(&seen.pings, 1);
}

static void on_hello(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)user;
    copy(seen.hello_auth, sizeof seen.hello_auth, exo_ctx_auth(ctx));
    copy(seen.hello_activity, sizeof seen.hello_activity, exo_ctx_activity_id(ctx));
    seen.hello_security = exo_ctx_is_security(ctx);
    if (exo_ctx_send(ctx, "hello-seen", payload_json) != EXO_OK)
        fprintf(stderr, "send failed: %s\n", exo_last_error());
}

static void on_slow(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)ctx, (void)payload_json, (void)user; /* never replies */
}

static atomic_int detach_delay_ms = 50;

static void *detached_worker(void *arg) {
    exo_ctx *ctx = arg;
    sleep_ms(atomic_load(&detach_delay_ms));
    if (exo_reply(ctx, "detached-pong", exo_ctx_payload(ctx)) != EXO_OK)
        fprintf(stderr, "detached reply failed: %s\n", exo_last_error());
    exo_ctx_free(ctx);
    return NULL;
}

static void on_detach(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)payload_json, (void)user;
    exo_ctx *owned = exo_ctx_detach(ctx);
    exo_ctx_free(ctx); /* lent, not ours: refused and logged */
    if (!owned) return;
    pthread_create(&seen.worker, NULL, detached_worker, owned);
    atomic_store(&seen.worker_started, 1);
}

static exo_service *new_c_test(int handle_signals) {
    const char *dir = service_dir("c-test", c_test_yaml);
    exo_options *opts = exo_options_new();
    exo_options_set_dir(opts, dir);
    exo_options_set_exocom_host(opts, "127.0.0.1");
    exo_options_set_exocom_port(opts, bus_port);
    exo_options_set_handle_signals(opts, handle_signals);
    exo_options_set_drain_timeout_ms(opts, 2000);
    exo_options_set_announce_online(opts, false);
    exo_service *svc = exo_service_new_with(opts);
    exo_options_free(opts);
    if (!svc) die("c-test: %s", exo_last_error());
    return svc;
}

static void add_handlers(exo_service *svc) {
    CHECK_RC(exo_service_on(svc, "ping", on_ping, NULL), EXO_OK);
    CHECK_RC(exo_service_on(svc, "hello", on_hello, NULL), EXO_OK);
    CHECK_RC(exo_service_on(svc, "slow", on_slow, NULL), EXO_OK);
    CHECK_RC(exo_service_on(svc, "detach", on_detach, NULL), EXO_OK);
    /* no handler for "ignored": it is received, logged and dropped */
}

/* A c-test service running in a thread. */
static exo_service *running;
static pthread_t running_thread;

static atomic_int running_done;

static void *run_running(void *svc) {
    void *rc = run_service(svc);
    atomic_store(&running_done, 1);
    return rc;
}

static void start_running(int handle_signals) {
    running = new_c_test(handle_signals);
    add_handlers(running);
    atomic_store(&running_done, 0);
    pthread_create(&running_thread, NULL, run_running, running);
    CHECK_RC(exo_service_wait_online(running, 10000), EXO_OK);
}

static int join_running(long timeout_ms) {
    /* run must return by itself (after a stop) within the time given */
    long long deadline = now_ms() + timeout_ms;
    while (!atomic_load(&running_done) && now_ms() < deadline) sleep_ms(10);
    CHECK(atomic_load(&running_done), "exo_service_run did not return within %ld ms", timeout_ms);
    if (!atomic_load(&running_done)) exo_service_stop(running);
    void *rc;
    pthread_join(running_thread, &rc);
    return (int)(intptr_t)rc;
}

/* ------------------------------------------------------------------ */
/* Tests                                                               */

static void test_version_and_status_names(void) {
    CHECK(exo_version() && strlen(exo_version()) >= 5, "version %s", exo_version());
    CHECK(strcmp(exo_status_name(EXO_ERR_TIMEOUT), "EXO_ERR_TIMEOUT") == 0, "name");
    CHECK(strcmp(exo_status_name(12345), "EXO_UNKNOWN_STATUS") == 0, "unknown name");
    CHECK(exo_last_error() != NULL, "last error is never NULL");
}

static void test_null_arguments(void) {
    exo_service_free(NULL);
    exo_string_free(NULL);
    exo_ctx_free(NULL);
    exo_options_free(NULL);
    exo_service_stop(NULL);
    CHECK_RC(exo_send(NULL, "ping", "{}"), EXO_ERR_USAGE);
    CHECK(strstr(exo_last_error(), "exo_send: svc is NULL") != NULL, "error text: %s", exo_last_error());
    CHECK_RC(exo_service_run(NULL), EXO_ERR_USAGE);
    CHECK_RC(exo_service_poll(NULL, 0), EXO_ERR_USAGE);
    CHECK_RC(exo_reply(NULL, "pong", "{}"), EXO_ERR_USAGE);
    CHECK(exo_ctx_name(NULL) == NULL, "ctx name of NULL");
    CHECK(exo_ctx_delivery_attempt(NULL) == 0, "delivery attempt of NULL");
    CHECK(strstr(exo_last_error(), "exo_ctx_delivery_attempt: ctx is NULL") != NULL,
          "error text: %s", exo_last_error());
    CHECK(exo_service_role(NULL) == NULL, "role of NULL");
    CHECK(exo_ctx_detach(NULL) == NULL, "detach NULL");
    CHECK_RC(exo_options_set_role(NULL, "x"), EXO_ERR_USAGE);
}

static void test_config_errors(void) {
    char missing[600];
    snprintf(missing, sizeof missing, "%s/no-such-service", tmp_dir);
    exo_service *svc = exo_service_new(missing);
    CHECK(svc == NULL, "a directory without service.yml is refused");
    CHECK(strstr(exo_last_error(), "no-such-service") != NULL, "names the directory: %s",
          exo_last_error());

    const char *dir = service_dir("broken", "type: broken\n"
                                            "messages:\n"
                                            "  receives: [ping\n"
                                            "  sends: 7\n");
    svc = exo_service_new(dir);
    CHECK(svc == NULL, "broken YAML is refused");
    CHECK(strstr(exo_last_error(), "service.yml:") != NULL, "names file and line: %s",
          exo_last_error());

    dir = service_dir("wrong-type", "type: wrong-type\n"
                                    "messages:\n"
                                    "  receives: 7\n");
    svc = exo_service_new(dir);
    CHECK(svc == NULL, "a number for receives is refused");
    CHECK(strstr(exo_last_error(), "service.yml:3") != NULL, "names line 3: %s", exo_last_error());

    exo_options *opts = exo_options_new();
    CHECK_RC(exo_options_set_role(opts, "not a role!"), EXO_ERR_USAGE);
    CHECK_RC(exo_options_set_exocom_port(opts, 70000), EXO_ERR_USAGE);
    CHECK_RC(exo_options_set_exocom_port(opts, -1), EXO_ERR_USAGE);
    CHECK_RC(exo_options_set_exocom_host(opts, ""), EXO_ERR_USAGE);
    CHECK_RC(exo_options_set_drain_timeout_ms(opts, -5), EXO_ERR_USAGE);
    CHECK_RC(exo_options_set_role(opts, "other-role"), EXO_OK);
    CHECK_RC(exo_options_set_dir(opts, service_dir("c-test", c_test_yaml)), EXO_OK);
    svc = exo_service_new_with(opts);
    exo_options_free(opts);
    CHECK(svc != NULL, "options make a service");
    if (svc) CHECK(strcmp(exo_service_role(svc), "other-role") == 0, "the role option wins");
    exo_service_free(svc);
}

static void test_registration_errors(void) {
    exo_service *svc = new_c_test(0);
    CHECK(strcmp(exo_service_role(svc), "c-test") == 0, "role from service.yml: %s",
          exo_service_role(svc));
    CHECK_RC(exo_service_on(svc, "not-received", on_ping, NULL), EXO_ERR_NOT_RECEIVED);
    CHECK(strstr(exo_last_error(), "not-received") && strstr(exo_last_error(), "receives"),
          "error text: %s", exo_last_error());
    CHECK_RC(exo_service_on(svc, "ping", on_ping, NULL), EXO_OK);
    CHECK_RC(exo_service_on(svc, "ping", on_ping, NULL), EXO_ERR_DUPLICATE_HANDLER);
    CHECK_RC(exo_service_on(svc, "hello", NULL, NULL), EXO_ERR_USAGE);
    CHECK_RC(exo_service_on(svc, NULL, on_ping, NULL), EXO_ERR_USAGE);
    CHECK_RC(exo_service_on(svc, "", on_ping, NULL), EXO_ERR_USAGE);
    CHECK_RC(exo_send(svc, "not-declared", "{}"), EXO_ERR_UNDECLARED);
    CHECK(strstr(exo_last_error(), "not-declared") && strstr(exo_last_error(), "sends"),
          "error text: %s", exo_last_error());
    CHECK_RC(exo_service_wait_online(svc, 50), EXO_ERR_USAGE); /* not started */
    exo_service_free(svc);
}

static void test_bad_json_refused(void) {
    exo_service *svc = new_c_test(0);
    CHECK_RC(exo_send(svc, "pong", "{\"a\": "), EXO_ERR_PAYLOAD);
    CHECK(strstr(exo_last_error(), "not valid JSON"), "error text: %s", exo_last_error());
    CHECK_RC(exo_send(svc, "pong", ""), EXO_ERR_PAYLOAD);
    CHECK_RC(exo_send(svc, "pong", "{} trailing"), EXO_ERR_PAYLOAD);
    CHECK_RC(exo_send(svc, "pong", "'single'"), EXO_ERR_PAYLOAD);
    CHECK_RC(exo_send(svc, "pong", "\"\xff\xfe\""), EXO_ERR_PAYLOAD);
    CHECK(strstr(exo_last_error(), "UTF-8"), "error text: %s", exo_last_error());
    CHECK_RC(exo_send(svc, "po\xffng", "{}"), EXO_ERR_USAGE);
    /* very deep nesting: checked without recursion, no stack overflow */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = 0;
    CHECK_RC(exo_send(svc, "pong", deep), EXO_OK);
    deep[2 * depth - 1] = 0; /* one bracket short */
    CHECK_RC(exo_send(svc, "pong", deep), EXO_ERR_PAYLOAD);
    free(deep);
    CHECK_RC(exo_send_with_auth(svc, "pong", "{}", "{token"), EXO_ERR_PAYLOAD);
    CHECK(strstr(exo_last_error(), "auth"), "error text: %s", exo_last_error());
    char *name = (char *)"untouched", *payload = (char *)"untouched";
    CHECK_RC(exo_request(svc, "pong", "[1,", 100, &name, &payload), EXO_ERR_PAYLOAD);
    CHECK(name == NULL && payload == NULL, "out-parameters are NULL after an error");
    /* valid JSON of every kind is taken (queued until the service connects) */
    CHECK_RC(exo_send(svc, "pong", NULL), EXO_OK);
    CHECK_RC(exo_send(svc, "pong", "null"), EXO_OK);
    CHECK_RC(exo_send(svc, "pong", " 42 "), EXO_OK);
    CHECK_RC(exo_send(svc, "pong", "\"text\""), EXO_OK);
    CHECK_RC(exo_send(svc, "pong", "[1, {\"b\": [true, null]}]"), EXO_OK);
    exo_service_free(svc);
}

static void test_on_reply_request(void) {
    start_running(0);
    char *name = NULL, *payload = NULL;
    const char *sent = "{\"n\":1,\"text\":\"h\xc3\xa9llo\",\"big\":12345678901234567890123}";
    CHECK_RC(exo_request(tester, "ping", sent, 5000, &name, &payload), EXO_OK);
    CHECK(name && strcmp(name, "pong") == 0, "reply name %s", name ? name : "(null)");
    CHECK(payload && strcmp(payload, sent) == 0, "payload echoed exactly: %s",
          payload ? payload : "(null)");
    exo_string_free(name);
    exo_string_free(payload);
    CHECK(pthread_equal(seen.thread, running_thread), "the handler ran on the run thread");
    CHECK(strcmp(seen.name, "ping") == 0, "ctx name %s", seen.name);
    CHECK(strcmp(seen.sender, "tester") == 0, "ctx sender %s", seen.sender);
    CHECK(strlen(seen.activity) == 36, "ctx activity id %s", seen.activity);
    CHECK(strlen(seen.message_id) == 36, "ctx message id %s", seen.message_id);
    CHECK(seen.attempt == 1, "delivery attempt on ExoCom: %u", seen.attempt);
    CHECK(seen.bad_reply_rc == EXO_ERR_PAYLOAD, "bad JSON reply refused: %s",
          exo_status_name(seen.bad_reply_rc));
    CHECK(seen.undeclared_reply_rc == EXO_ERR_UNDECLARED, "undeclared reply refused: %s",
          exo_status_name(seen.undeclared_reply_rc));

    /* no payload: the handler gets "null", the reply has none */
    CHECK_RC(exo_request(tester, "ping", NULL, 5000, &name, &payload), EXO_OK);
    CHECK(payload && strcmp(payload, "null") == 0, "null payload: %s", payload ? payload : "(null)");
    exo_string_free(name);
    exo_string_free(payload);

    /* only the name wanted */
    CHECK_RC(exo_request(tester, "ping", "[1,2,3]", 5000, &name, NULL), EXO_OK);
    CHECK(name && strcmp(name, "pong") == 0, "name only");
    exo_string_free(name);
}

static void test_send_carries_auth(void) {
    CHECK_RC(exo_send_with_auth(tester, "hello", "{\"who\":\"c\"}", "{\"token\":\"t-1\"}"), EXO_OK);
    received_t r;
    CHECK(inbox_wait("hello-seen", "\"who\":\"c\"", 5000, &r), "hello-seen arrives");
    CHECK(strcmp(seen.hello_auth, "{\"token\":\"t-1\"}") == 0, "the handler sees the auth: %s",
          seen.hello_auth);
    CHECK(!seen.hello_security, "not a security message");
    CHECK(strcmp(r.auth, "{\"token\":\"t-1\"}") == 0, "a send from a handler carries its auth: %s",
          r.auth);
    CHECK(strlen(r.activity) == 36 && strcmp(r.activity, seen.hello_activity) != 0,
          "a send starts a new activity (%s vs %s)", r.activity, seen.hello_activity);
}

static void test_request_carries_auth(void) {
    char *name = NULL, *payload = NULL, *auth = (char *)"untouched";
    const char *token = "{\"token\":\"t-2\",\"scopes\":[\"r\"]}";
    CHECK_RC(exo_request_with_auth(tester, "ping", "[1]", token, 5000, &name, &payload, &auth), EXO_OK);
    CHECK(name && strcmp(name, "pong") == 0, "reply name %s", name ? name : "(null)");
    CHECK(payload && strcmp(payload, "[1]") == 0, "payload %s", payload ? payload : "(null)");
    CHECK(auth && strcmp(auth, token) == 0, "the reply carries the auth back: %s",
          auth ? auth : "(null)");
    exo_string_free(name);
    exo_string_free(payload);
    exo_string_free(auth);
    /* no auth sent: none comes back; out-parameters may be NULL */
    auth = (char *)"untouched";
    CHECK_RC(exo_request_with_auth(tester, "ping", NULL, NULL, 5000, NULL, NULL, &auth), EXO_OK);
    CHECK(auth == NULL, "no auth: %s", auth ? auth : "(null)");
    /* auth that is not JSON is refused before anything is sent */
    auth = (char *)"untouched";
    CHECK_RC(exo_request_with_auth(tester, "ping", "{}", "{token", 5000, &name, &payload, &auth),
             EXO_ERR_PAYLOAD);
    CHECK(strstr(exo_last_error(), "auth"), "error text: %s", exo_last_error());
    CHECK(name == NULL && payload == NULL && auth == NULL, "out-parameters are NULL after an error");
    CHECK_RC(exo_request_with_auth(tester, "nobody", NULL, "1", 200, NULL, NULL, NULL),
             EXO_ERR_TIMEOUT);
}

static void test_request_timeout(void) {
    char *name = (char *)"x", *payload = (char *)"x";
    long long t0 = now_ms();
    CHECK_RC(exo_request(tester, "slow", "{}", 300, &name, &payload), EXO_ERR_TIMEOUT);
    long long took = now_ms() - t0;
    CHECK(took >= 290 && took < 5000, "timed out after %lld ms", took);
    CHECK(name == NULL && payload == NULL, "no reply handed out");
    CHECK(strstr(exo_last_error(), "slow"), "error names the request: %s", exo_last_error());
    /* a message nobody receives */
    CHECK_RC(exo_request(tester, "nobody", NULL, 200, NULL, NULL), EXO_ERR_TIMEOUT);
    CHECK_RC(exo_request(tester, "ping", NULL, 0, NULL, NULL), EXO_ERR_USAGE);
    CHECK_RC(exo_request(tester, "ping", NULL, -1, NULL, NULL), EXO_ERR_USAGE);
}

static void test_unknown_message_logged(void) {
    CHECK_RC(exo_send(tester, "ignored", "{\"x\":1}"), EXO_OK);
    long long deadline = now_ms() + 5000;
    int logged = 0;
    while (!logged && now_ms() < deadline) {
        logged = log_has("'ignored'", "no handler");
        if (!logged) sleep_ms(20);
    }
    CHECK(logged, "'ignored' without a handler is logged (in %s)", log_path);
    /* and the service goes on */
    CHECK_RC(exo_request(tester, "ping", "{\"after\":\"ignored\"}", 5000, NULL, NULL), EXO_OK);
}

static void test_detach_and_reply_later(void) {
    atomic_store(&seen.worker_started, 0);
    char *name = NULL, *payload = NULL;
    CHECK_RC(exo_request(tester, "detach", "{\"later\":true}", 5000, &name, &payload), EXO_OK);
    CHECK(name && strcmp(name, "detached-pong") == 0, "reply from the worker thread: %s",
          name ? name : "(null)");
    CHECK(payload && strcmp(payload, "{\"later\":true}") == 0, "payload %s",
          payload ? payload : "(null)");
    exo_string_free(name);
    exo_string_free(payload);
    if (atomic_load(&seen.worker_started)) pthread_join(seen.worker, NULL);
    CHECK(log_has("exo_ctx_free", "lent"), "freeing a lent ctx is refused and logged");
}

struct load_arg {
    int from, count, ok;
};

static void *load_worker(void *p) {
    struct load_arg *a = p;
    for (int i = a->from; i < a->from + a->count; i++) {
        char sent[64], *reply = NULL;
        snprintf(sent, sizeof sent, "{\"i\":%d}", i);
        if (exo_request(tester, "ping", sent, 10000, NULL, &reply) == EXO_OK && reply &&
            strcmp(reply, sent) == 0)
            a->ok++;
        exo_string_free(reply);
    }
    return NULL;
}

static int load = 200;

static void test_requests_from_threads(void) {
    enum { THREADS = 4 };
    pthread_t threads[THREADS];
    struct load_arg args[THREADS];
    int per = load / THREADS;
    long long t0 = now_ms();
    for (int t = 0; t < THREADS; t++) {
        args[t] = (struct load_arg){t * per, per, 0};
        pthread_create(&threads[t], NULL, load_worker, &args[t]);
    }
    int ok = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        ok += args[t].ok;
    }
    long long took = now_ms() - t0;
    CHECK(ok == per * THREADS, "%d of %d requests answered", ok, per * THREADS);
    printf("    %d requests from %d threads in %lld ms (%.0f/s)\n", per * THREADS, THREADS, took,
           took > 0 ? 1000.0 * per * THREADS / took : 0.0);
}

static void test_rust_caller(void) {
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "'%s' send ping '{\"from\":\"rust\"}' --await --role rust-caller --host 127.0.0.1 "
             "--port %d --timeout 10 2>>'%s'",
             exo_bin, bus_port, log_path);
    FILE *p = popen(cmd, "r");
    CHECK(p != NULL, "popen %s", cmd);
    if (!p) return;
    char line[512] = "";
    if (!fgets(line, sizeof line, p)) line[0] = 0;
    int status = pclose(p);
    line[strcspn(line, "\n")] = 0;
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exo send exited with %d", status);
    CHECK(strcmp(line, "pong {\"from\":\"rust\"}") == 0, "the Rust caller got: %s", line);
}

static void test_stop_from_another_thread(void) {
    /* `running` is up since test_on_reply_request */
    long long t0 = now_ms();
    exo_service_stop(running);
    exo_service_stop(running); /* twice is fine */
    int rc = join_running(5000);
    long long took = now_ms() - t0;
    CHECK(rc == EXO_OK, "run returned %s", exo_status_name(rc));
    CHECK(took < 3000, "run returned %lld ms after the stop", took);
    CHECK_RC(exo_send(running, "pong", "{}"), EXO_ERR_STOPPED);
    CHECK_RC(exo_service_run(running), EXO_ERR_STOPPED);
    exo_service_free(running);
    running = NULL;
}

static long long stopped_at;

static void *stop_when_detached(void *arg) {
    (void)arg;
    while (!atomic_load(&seen.worker_started)) sleep_ms(5);
    stopped_at = now_ms();
    exo_service_stop(running);
    return NULL;
}

static void test_drain_waits_for_detached_work(void) {
    start_running(0);
    atomic_store(&seen.worker_started, 0);
    atomic_store(&detach_delay_ms, 300);
    pthread_t stopper;
    pthread_create(&stopper, NULL, stop_when_detached, NULL);
    char *name = NULL;
    CHECK_RC(exo_request(tester, "detach", "{\"drain\":1}", 5000, &name, NULL), EXO_OK);
    CHECK(name && strcmp(name, "detached-pong") == 0, "the reply made after the stop went out: %s",
          name ? name : "(null)");
    exo_string_free(name);
    int rc = join_running(5000);
    long long took = now_ms() - stopped_at;
    CHECK(rc == EXO_OK, "run returned %s", exo_status_name(rc));
    CHECK(took >= 250, "run waited %lld ms for the detached work", took);
    pthread_join(stopper, NULL);
    pthread_join(seen.worker, NULL);
    atomic_store(&detach_delay_ms, 50);
    exo_service_free(running);
    running = NULL;
}

static void test_stop_by_sigterm(void) {
    struct sigaction before, after;
    sigaction(SIGTERM, NULL, &before);
    start_running(1);
    kill(getpid(), SIGTERM);
    int rc = join_running(5000);
    CHECK(rc == EXO_OK, "run returned %s after SIGTERM", exo_status_name(rc));
    sigaction(SIGTERM, NULL, &after);
    CHECK(after.sa_handler == before.sa_handler, "the previous SIGTERM handler is back");
    exo_service_free(running);
    running = NULL;
}

static exo_service *volatile signal_target;

static void on_usr1(int sig) {
    (void)sig;
    exo_service_stop(signal_target); /* async-signal-safe */
}

static void test_stop_from_own_signal_handler(void) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    start_running(0);
    signal_target = running;
    kill(getpid(), SIGUSR1);
    int rc = join_running(5000);
    CHECK(rc == EXO_OK, "run returned %s after SIGUSR1", exo_status_name(rc));
    sigaction(SIGUSR1, &old, NULL);
    signal_target = NULL;
    exo_service_free(running);
    running = NULL;
}

static void test_stop_before_run(void) {
    exo_service *svc = new_c_test(1);
    exo_service_stop(svc);
    long long t0 = now_ms();
    CHECK_RC(exo_service_run(svc), EXO_OK);
    CHECK(now_ms() - t0 < 1000, "returns at once");
    CHECK_RC(exo_service_poll(svc, 0), EXO_ERR_STOPPED);
    exo_service_free(svc);
}

/* Handler errors in the service's metrics (EXOSERVICE_METRICS_PORT). */
static void on_failing(exo_ctx *ctx, const char *payload_json, void *user) {
    (void)user;
    CHECK_RC(exo_ctx_fail(ctx), EXO_OK);
    CHECK_RC(exo_ctx_fail(ctx), EXO_OK); /* twice changes nothing */
    if (exo_reply(ctx, "pong", payload_json) != EXO_OK)
        fprintf(stderr, "reply failed: %s\n", exo_last_error());
}

/* GET path on 127.0.0.1:port; the whole response in out. -1 on failure. */
static int http_get(int port, const char *path, char *out, size_t size) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (fd >= 0) close(fd);
        return -1;
    }
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < size && (r = read(fd, out + got, size - 1 - got)) > 0) got += (size_t)r;
    out[got] = '\0';
    close(fd);
    return (int)got;
}

static void test_failed_handlers_are_counted(void) {
    int port = free_port();
    char value[16];
    snprintf(value, sizeof value, "%d", port);
    setenv("EXOSERVICE_METRICS_PORT", value, 1);
    exo_service *svc = new_c_test(0);
    unsetenv("EXOSERVICE_METRICS_PORT");
    CHECK_RC(exo_service_on(svc, "ping", on_failing, NULL), EXO_OK);
    pthread_t thread;
    pthread_create(&thread, NULL, run_service, svc);
    CHECK_RC(exo_service_wait_online(svc, 10000), EXO_OK);
    CHECK_RC(exo_request(tester, "ping", "{\"fail\":1}", 5000, NULL, NULL), EXO_OK);
    static char body[1 << 16];
    const char *want = "exoservice_handler_errors_total{message=\"ping\"} 1\n";
    int found = 0;
    long long deadline = now_ms() + 3000;
    while (!found && now_ms() < deadline) {
        found = http_get(port, "/metrics", body, sizeof body) > 0 && strstr(body, want) != NULL;
        if (!found) sleep_ms(20);
    }
    CHECK(found, "/metrics counts the failed handler: %s", body);
    CHECK_RC(exo_ctx_fail(NULL), EXO_ERR_USAGE);
    exo_service_stop(svc);
    pthread_join(thread, NULL);
    exo_service_free(svc);
}

/* The poll loop, with a before-all hook. */
static struct {
    int ran, rc_send;
    pthread_t thread;
    exo_service *svc;
} hook;
static int poll_inside_rc, free_inside_survived;

static int before_all(exo_service *svc, void *user) {
    hook.ran++;
    hook.thread = pthread_self();
    hook.rc_send = exo_send(svc, "started", user);
    return 0;
}

static void on_ping_polled(exo_ctx *ctx, const char *payload_json, void *user) {
    exo_service *svc = user;
    seen.thread = pthread_self();
    poll_inside_rc = exo_service_poll(svc, 0); /* not from a callback */
    exo_service_free(svc);                     /* refused: it is running */
    free_inside_survived = 1;
    exo_reply(ctx, "pong", payload_json);
}

static void test_poll_loop_and_before_all(void) {
    exo_service *svc = new_c_test(0);
    CHECK_RC(exo_service_on(svc, "ping", on_ping_polled, svc), EXO_OK);
    CHECK_RC(exo_service_before_all(svc, before_all, "{\"by\":\"before-all\"}"), EXO_OK);
    CHECK_RC(exo_service_start(svc), EXO_OK);
    CHECK(hook.ran == 1 && pthread_equal(hook.thread, pthread_self()),
          "the hook ran once, on the starting thread");
    CHECK(hook.rc_send == EXO_OK, "the hook can send: %s", exo_status_name(hook.rc_send));
    CHECK_RC(exo_service_start(svc), EXO_OK); /* again: nothing */
    CHECK(hook.ran == 1, "the hook runs once");
    CHECK_RC(exo_service_before_all(svc, before_all, NULL), EXO_ERR_USAGE);
    CHECK_RC(exo_service_wait_online(svc, 10000), EXO_OK);
    CHECK(inbox_wait("started", "before-all", 5000, NULL), "the hook's message went out");

    long long t0 = now_ms();
    CHECK_RC(exo_service_poll(svc, 150), 0);
    long long took = now_ms() - t0;
    CHECK(took >= 140, "poll waited %lld ms", took);
    CHECK_RC(exo_service_poll(svc, 0), 0);

    CHECK_RC(exo_send(tester, "ping", "{\"polled\":1}"), EXO_OK);
    int handled = 0;
    long long deadline = now_ms() + 5000;
    while (handled == 0 && now_ms() < deadline) handled = exo_service_poll(svc, 100);
    CHECK(handled == 1, "poll handled %d", handled);
    CHECK(pthread_equal(seen.thread, pthread_self()), "the handler ran on the polling thread");
    CHECK(poll_inside_rc == EXO_ERR_USAGE, "poll from a callback refused: %s",
          exo_status_name(poll_inside_rc));
    CHECK(free_inside_survived, "free from a callback refused");
    CHECK(inbox_wait("pong", "\"polled\":1", 5000, NULL), "the polled handler replied");

    exo_service_stop(svc);
    CHECK_RC(exo_service_poll(svc, 1000), EXO_ERR_STOPPED);
    CHECK_RC(exo_service_poll(svc, 1000), EXO_ERR_STOPPED);
    exo_service_free(svc);
}

static void *stop_later(void *svc) {
    sleep_ms(200);
    exo_service_stop(svc);
    return NULL;
}

static void test_poll_forever_woken_by_stop(void) {
    exo_service *svc = new_c_test(0);
    CHECK_RC(exo_service_on(svc, "ping", on_ping, NULL), EXO_OK);
    pthread_t t;
    pthread_create(&t, NULL, stop_later, svc);
    long long t0 = now_ms();
    CHECK_RC(exo_service_poll(svc, -1), EXO_ERR_STOPPED);
    long long took = now_ms() - t0;
    CHECK(took >= 150 && took < 3000, "woken %lld ms later", took);
    pthread_join(t, NULL);
    exo_service_free(svc);
}

static int failing_hook(exo_service *svc, void *user) {
    (void)svc, (void)user;
    return 7;
}

static void test_failing_hook(void) {
    exo_service *svc = new_c_test(0);
    CHECK_RC(exo_service_before_all(svc, failing_hook, NULL), EXO_OK);
    CHECK_RC(exo_service_run(svc), EXO_ERR_HOOK);
    CHECK(strstr(exo_last_error(), "returned 7"), "error text: %s", exo_last_error());
    CHECK_RC(exo_service_run(svc), EXO_ERR_USAGE);
    exo_service_free(svc);
}

static void test_bus_away(void) {
    /* a port where nothing listens: start works, registration does not */
    int port = bus_port == 1 ? 2 : 1;
    exo_options *opts = exo_options_new();
    exo_options_set_dir(opts, service_dir("c-test", c_test_yaml));
    exo_options_set_exocom_host(opts, "127.0.0.1");
    exo_options_set_exocom_port(opts, port);
    exo_options_set_drain_timeout_ms(opts, 300);
    exo_service *svc = exo_service_new_with(opts);
    exo_options_free(opts);
    CHECK(svc != NULL, "made");
    if (!svc) return;
    CHECK_RC(exo_service_start(svc), EXO_OK);
    CHECK_RC(exo_service_wait_online(svc, 300), EXO_ERR_TIMEOUT);
    CHECK_RC(exo_send(svc, "pong", "{\"waits\":true}"), EXO_OK); /* buffered */
    long long t0 = now_ms();
    exo_service_free(svc);
    CHECK(now_ms() - t0 < 3000, "free gives up on the unsent message after the drain timeout");
}

/* ------------------------------------------------------------------ */

int main(void) {
    exocom_bin = getenv("EXOCOM_BIN");
    exo_bin = getenv("EXO_BIN");
    if (!exocom_bin || !exo_bin) die("set EXOCOM_BIN and EXO_BIN");
    if (getenv("EXO_TEST_LOAD")) load = atoi(getenv("EXO_TEST_LOAD"));
    if (load < 4) load = 4;
    tests_begin("exoservice-c-test", "", 120);

    start_bus();
    printf("exocom on port %d\n", bus_port);

    run_test("version and status names", test_version_and_status_names);
    run_test("NULL arguments are errors, not crashes", test_null_arguments);
    run_test("config errors", test_config_errors);
    run_test("registration errors", test_registration_errors);
    run_test("bad JSON refused", test_bad_json_refused);

    start_tester();
    run_test("on, reply, request", test_on_reply_request);
    run_test("send from a handler carries auth", test_send_carries_auth);
    run_test("a request with auth gets it back in the reply", test_request_carries_auth);
    run_test("request timeout", test_request_timeout);
    run_test("unknown message logged", test_unknown_message_logged);
    run_test("detached ctx replies from a worker thread", test_detach_and_reply_later);
    run_test("requests from several threads", test_requests_from_threads);
    run_test("C service answers a Rust caller", test_rust_caller);
    run_test("stop from another thread", test_stop_from_another_thread);
    run_test("stop waits for detached work, then its reply goes out", test_drain_waits_for_detached_work);
    run_test("stop by SIGTERM", test_stop_by_sigterm);
    run_test("stop from the program's own signal handler", test_stop_from_own_signal_handler);
    run_test("stop before run", test_stop_before_run);
    run_test("failed handlers are counted in the metrics", test_failed_handlers_are_counted);
    run_test("poll loop and before-all hook", test_poll_loop_and_before_all);
    run_test("poll without timeout woken by stop", test_poll_forever_woken_by_stop);
    run_test("failing before-all hook", test_failing_hook);
    run_test("bus away: buffered, bounded drain", test_bus_away);
    stop_tester();

    stop_bus();
    return tests_end();
}
