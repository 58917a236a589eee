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

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Reporting                                                           */

static int passed, failed;
static int current_failed;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            current_failed = 1;                                            \
            printf("    FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            printf(__VA_ARGS__);                                           \
            printf(" (last error: %s)\n", exo_last_error());               \
            fflush(stdout);                                                \
        }                                                                  \
    } while (0)

#define CHECK_RC(call, want)                                               \
    do {                                                                   \
        int rc_ = (call);                                                  \
        CHECK(rc_ == (want), "%s returned %s, expected %s", #call,         \
              exo_status_name(rc_), exo_status_name(want));                \
    } while (0)

static void run_test(const char *name, void (*test)(void)) {
    current_failed = 0;
    printf("  %s ...\n", name);
    fflush(stdout);
    test();
    if (current_failed) {
        failed++;
        printf("  FAILED %s\n", name);
    } else {
        passed++;
        printf("  ok %s\n", name);
    }
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* Helpers                                                             */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static pid_t nats_pid = -1;

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("FATAL: ");
    vprintf(fmt, ap);
    printf("\n0 passed, 1 failed\n");
    va_end(ap);
    fflush(stdout);
    if (nats_pid > 0) kill(nats_pid, SIGKILL);
    exit(2);
}

static char tmp_dir[256];
static char log_path[512];

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) die("cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* Makes tmp_dir/name/service.yml; returns the directory (static buffer per slot). */
static const char *service_dir(const char *name, const char *yaml) {
    static char dirs[4][512];
    static int next;
    char *dir = dirs[next++ % 4];
    snprintf(dir, 512, "%s/%s", tmp_dir, name);
    mkdir(dir, 0755);
    char file[600];
    snprintf(file, sizeof file, "%s/service.yml", dir);
    write_file(file, yaml);
    return dir;
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0)
        die("no free port: %s", strerror(errno));
    close(fd);
    return ntohs(a.sin_port);
}

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
    nats_pid = fork();
    if (nats_pid < 0) die("fork: %s", strerror(errno));
    if (nats_pid == 0) {
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
        if (waitpid(nats_pid, &status, WNOHANG) == nats_pid) {
            nats_pid = -1;
            return 0;
        }
        if (accepts(port)) return 1;
        sleep_ms(50);
    }
    kill(nats_pid, SIGKILL);
    waitpid(nats_pid, NULL, 0);
    nats_pid = -1;
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
    if (nats_pid <= 0) return;
    kill(nats_pid, SIGTERM);
    waitpid(nats_pid, NULL, 0);
    nats_pid = -1;
}

static void on_watchdog(int sig) {
    (void)sig;
    static const char text[] = "\nTIMEOUT: the tests hung; see the log\n0 passed, 1 failed\n";
    ssize_t n = write(1, text, sizeof text - 1);
    (void)n;
    if (nats_pid > 0) kill(nats_pid, SIGKILL);
    _exit(3);
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

static void *run_service(void *svc) {
    intptr_t rc = exo_service_run((exo_service *)svc);
    if (rc != EXO_OK) fprintf(stderr, "run failed: %s\n", exo_last_error());
    return (void *)rc;
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
    setvbuf(stdout, NULL, _IOLBF, 0);
    int watchdog = getenv("EXO_TEST_TIMEOUT") ? atoi(getenv("EXO_TEST_TIMEOUT")) : 60;

    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmp_dir, sizeof tmp_dir, "%s/exoservice-c-nats-XXXXXX", base);
    if (!mkdtemp(tmp_dir)) die("mkdtemp: %s", strerror(errno));
    if (getenv("EXO_TEST_LOG"))
        snprintf(log_path, sizeof log_path, "%s", getenv("EXO_TEST_LOG"));
    else
        snprintf(log_path, sizeof log_path, "%s/log.txt", tmp_dir);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log_fd < 0) die("cannot open %s: %s", log_path, strerror(errno));
    fflush(stderr);
    dup2(log_fd, 2);
    close(log_fd);
    setvbuf(stderr, NULL, _IONBF, 0);
    printf("libexoservice %s over NATS; logs in %s\n", exo_version(), log_path);

    signal(SIGALRM, on_watchdog);
    alarm((unsigned)watchdog);
    signal(SIGPIPE, SIG_IGN);

    start_nats();
    printf("nats-server on port %d\n", nats_port);

    run_test("exo_ctx_delivery_attempt of NULL is 0, with an error", test_null_ctx);
    run_test("a failed at-least-once message comes again with its attempt",
             test_failed_message_comes_again);

    stop_nats();
    alarm(0);
    if (failed == 0 && !getenv("EXO_TEST_LOG")) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
        if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp_dir);
    } else {
        printf("logs kept in %s\n", log_path);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
