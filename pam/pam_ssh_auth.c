/*
 * pam_ssh_auth: the ssh-auth phone check as a step of SSH authentication (an `auth` module).
 *
 * It only relays. It tells the ssh-auth service who is logging in (the user, PAM_RHOST and
 * SSH_AUTH_INFO_0, the key sshd has already accepted), shows the service's challenge in one
 * PAM_PROMPT_ECHO_ON prompt (the QR, the short URL, the number: drawn by the service), and
 * returns the service's verdict. It decides nothing: PAM_SUCCESS only when the service answers
 * allow; every other path (no socket, a peer that is not root or the service user, a malformed
 * or over-long line, a timeout, a failed conversation) is PAM_AUTH_ERR with one PAM_ERROR_MSG.
 *
 * Arguments: socket=PATH (default /run/ssh-auth/ssh-auth.sock), timeout=SECONDS (default 180).
 * The wire protocol is the service's: JSON objects (json-c), one per line, at most 64 KiB a line.
 */

#define _GNU_SOURCE /* struct ucred, SO_PEERCRED */
#define PAM_SM_AUTH

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <security/pam_appl.h>
#include <security/pam_modules.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/run/ssh-auth/ssh-auth.sock"
#define SERVICE_USER "ssh-auth"
#define DEFAULT_TIMEOUT 180
#define FIRST_REPLY_SECONDS 10
#define MAX_LINE (64 * 1024)
#define TOO_LONG (-2)
#define MAX_FIELD 4096 /* user and rhost, each, before escaping */
#define MAX_AUTH_INFO (16 * 1024) /* the first factor's line: a certificate can run to kilobytes */
#define ERROR_PREFIX "ssh-auth: "
#define MAX_DEPTH 4 /* the service sends flat objects */
#define MALFORMED "the ssh-auth service sent a malformed answer. Access denied."
#define LOST "lost the ssh-auth service. Access denied."

struct options {
    const char *socket_path;
    int timeout;
};


/* Bytes read from the service, a line at a time. */
struct reader {
    int fd;
    char buf[MAX_LINE + 2];
    size_t len;
};

static void parse_options(int argc, const char **argv, struct options *opts)
{
    opts->socket_path = DEFAULT_SOCKET;
    opts->timeout = DEFAULT_TIMEOUT;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "socket=", 7) == 0 && argv[i][7] == '/') {
            opts->socket_path = argv[i] + 7;
        } else if (strncmp(argv[i], "timeout=", 8) == 0) {
            char *end = NULL;
            long value = strtol(argv[i] + 8, &end, 10);
            if (end != argv[i] + 8 && *end == '\0' && value > 0 && value <= 3600) {
                opts->timeout = (int)value;
            }
        }
    }
}

static time_t now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* One message to the person, through the application's conversation function. */
static int converse(pam_handle_t *pamh, int style, const char *text, char **answer)
{
    const struct pam_conv *conv = NULL;
    struct pam_message msg = {style, text};
    const struct pam_message *msgs[1] = {&msg};
    struct pam_response *resp = NULL;

    if (answer != NULL) {
        *answer = NULL;
    }
    if (pam_get_item(pamh, PAM_CONV, (const void **)&conv) != PAM_SUCCESS || conv == NULL ||
        conv->conv == NULL) {
        return PAM_CONV_ERR;
    }
    int rc = conv->conv(1, msgs, &resp, conv->appdata_ptr);
    if (resp != NULL) {
        if (rc == PAM_SUCCESS && answer != NULL) {
            *answer = resp[0].resp; /* the caller frees it */
        } else if (resp[0].resp != NULL) {
            memset(resp[0].resp, 0, strlen(resp[0].resp));
            free(resp[0].resp);
        }
        free(resp);
    }
    return rc;
}

/* One line for the person, then the failure return. */
static int deny(pam_handle_t *pamh, const char *reason)
{
    char line[1024];
    snprintf(line, sizeof(line), "%s%s", ERROR_PREFIX, reason);
    converse(pamh, PAM_ERROR_MSG, line, NULL);
    return PAM_AUTH_ERR;
}

static int service_uid(uid_t *uid)
{
    struct passwd pw, *found = NULL;
    char buf[4096];
    if (getpwnam_r(SERVICE_USER, &pw, buf, sizeof(buf), &found) != 0 || found == NULL) {
        return -1;
    }
    *uid = found->pw_uid;
    return 0;
}

/* The service's socket, if the process behind it is root or the service user (SO_PEERCRED). */
static int connect_service(const char *path, const char **why)
{
    struct sockaddr_un addr;
    if (strlen(path) >= sizeof(addr.sun_path)) {
        *why = "the ssh-auth socket path is too long. Access denied.";
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *why = "cannot reach the ssh-auth service. Access denied.";
        return -1;
    }
    memset(&addr, 0, sizeof(addr));
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, strlen(path) + 1);
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        *why = (errno == ENOENT || errno == ECONNREFUSED)
                   ? "the ssh-auth service is not running. Access denied."
                   : "cannot reach the ssh-auth service. Access denied.";
        close(fd);
        return -1;
    }
    struct ucred peer;
    socklen_t size = sizeof(peer);
    uid_t service = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0 ||
        (peer.uid != 0 && (service_uid(&service) != 0 || peer.uid != service))) {
        /* SECURITY: only root or the service account may answer "allow". */
        *why = "the ssh-auth socket is served by an untrusted process. Access denied.";
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t sent = send(fd, data, len, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) {
            continue;
        }
        if (sent <= 0) {
            return -1;
        }
        data += sent;
        len -= (size_t)sent;
    }
    return 0;
}

/* The next line (without its newline) into *line, by the deadline: 0; TOO_LONG for a line over
 * MAX_LINE; -1 on any other failure (closed, timed out, out of memory). */
static int read_line(struct reader *r, time_t deadline, char **line)
{
    for (;;) {
        char *newline = memchr(r->buf, '\n', r->len);
        if (newline != NULL) {
            size_t size = (size_t)(newline - r->buf);
            *line = malloc(size + 1);
            if (*line == NULL) {
                return -1;
            }
            memcpy(*line, r->buf, size);
            (*line)[size] = '\0';
            memmove(r->buf, newline + 1, r->len - size - 1);
            r->len -= size + 1;
            return 0;
        }
        if (r->len > MAX_LINE) {
            return TOO_LONG;
        }
        time_t left = deadline - now();
        if (left <= 0) {
            return -1;
        }
        struct pollfd pfd = {r->fd, POLLIN, 0};
        int ready = poll(&pfd, 1, (int)(left > INT_MAX / 1000 ? INT_MAX : left * 1000));
        if (ready < 0 && errno == EINTR) {
            continue;
        }
        if (ready <= 0) {
            return -1;
        }
        ssize_t got = recv(r->fd, r->buf + r->len, sizeof(r->buf) - r->len, 0);
        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got <= 0) {
            return -1; /* closed */
        }
        r->len += (size_t)got;
    }
}

/* A flat JSON object with "v": 1 and a string "event"; NULL if the line is anything else. */
static struct json_object *parse_message(const char *line)
{
    struct json_tokener *tokener = json_tokener_new_ex(MAX_DEPTH);
    struct json_object *message = NULL, *version = NULL, *event = NULL;
    if (tokener == NULL) {
        return NULL;
    }
    json_tokener_set_flags(tokener, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    size_t size = strlen(line);
    message = json_tokener_parse_ex(tokener, line, (int)size);
    if (message != NULL && (json_tokener_get_error(tokener) != json_tokener_success ||
                            json_tokener_get_parse_end(tokener) != size ||
                            !json_object_is_type(message, json_type_object) ||
                            !json_object_object_get_ex(message, "v", &version) ||
                            !json_object_is_type(version, json_type_int) ||
                            json_object_get_int64(version) != 1 ||
                            !json_object_object_get_ex(message, "event", &event) ||
                            !json_object_is_type(event, json_type_string))) {
        json_object_put(message);
        message = NULL;
    }
    json_tokener_free(tokener);
    return message;
}

/* A string field of a message, or NULL when it is absent or not a string. */
static const char *text_field(struct json_object *message, const char *key)
{
    struct json_object *value = NULL;
    if (!json_object_object_get_ex(message, key, &value) ||
        !json_object_is_type(value, json_type_string)) {
        return NULL;
    }
    return json_object_get_string(value);
}

/* Whether a message says allow: a literal JSON true, nothing else. */
static int allows(struct json_object *message)
{
    struct json_object *value = NULL;
    return json_object_object_get_ex(message, "allow", &value) &&
           json_object_is_type(value, json_type_boolean) && json_object_get_boolean(value);
}

/* The request line: who is logging in, as sshd and PAM know it; NULL if a field is too long. */
static char *build_request(pam_handle_t *pamh, const char *user)
{
    const void *rhost = NULL;
    const char *auth_info = pam_getenv(pamh, "SSH_AUTH_INFO_0");
    if (pam_get_item(pamh, PAM_RHOST, &rhost) != PAM_SUCCESS || rhost == NULL) {
        rhost = "";
    }
    if (auth_info == NULL) {
        auth_info = "";
    }
    if (strlen(user) > MAX_FIELD || strlen(rhost) > MAX_FIELD) {
        return NULL;
    }
    /* Only the first method's line (the key, shown on the phone), and none if it is too long to
     * send: the key is shown, never decided on. */
    size_t first = strcspn(auth_info, "\n");
    if (first > MAX_AUTH_INFO) {
        first = 0;
    }
    struct json_object *request = json_object_new_object();
    if (request == NULL) {
        return NULL;
    }
    json_object_object_add(request, "v", json_object_new_int(1));
    json_object_object_add(request, "op", json_object_new_string("pam-login"));
    json_object_object_add(request, "user", json_object_new_string(user));
    json_object_object_add(request, "rhost", json_object_new_string(rhost));
    json_object_object_add(request, "auth_info", json_object_new_string_len(auth_info, (int)first));
    const char *text = json_object_to_json_string_ext(request, JSON_C_TO_STRING_PLAIN);
    char *line = NULL;
    if (text != NULL && asprintf(&line, "%s\n", text) < 0) {
        line = NULL;
    }
    json_object_put(request);
    return line;
}

/* The service's next message by the deadline; NULL (and *why) if there is none that parses. */
static struct json_object *next_message(struct reader *r, time_t deadline, const char **why)
{
    char *line = NULL;
    int rc = read_line(r, deadline, &line);
    if (rc != 0) {
        *why = rc == TOO_LONG ? MALFORMED : "the ssh-auth service did not answer. Access denied.";
        return NULL;
    }
    struct json_object *message = parse_message(line);
    free(line);
    if (message == NULL) {
        *why = MALFORMED;
    }
    return message;
}

/* The verdict as PAM's answer: success only for allow. An empty reason means the person was
 * already told on this connection (a client's retry): then nothing more is shown. */
static int verdict(pam_handle_t *pamh, struct json_object *message)
{
    const char *reason = text_field(message, "reason");
    int rc = allows(message)                ? PAM_SUCCESS
             : reason == NULL               ? deny(pamh, "Access denied.")
             : *reason == '\0'              ? PAM_AUTH_ERR
                                            : deny(pamh, reason);
    json_object_put(message);
    return rc;
}

static int is_event(struct json_object *message, const char *event)
{
    return strcmp(text_field(message, "event"), event) == 0;
}

/* The service's messages to PAM's answer: a verdict at once, or a challenge, Enter, a verdict. */
static int relay(pam_handle_t *pamh, struct reader *r, const struct options *opts)
{
    const char *why = NULL;
    time_t deadline = now() + opts->timeout;
    int first = opts->timeout < FIRST_REPLY_SECONDS ? opts->timeout : FIRST_REPLY_SECONDS;
    struct json_object *message = next_message(r, now() + first, &why);
    if (message == NULL) {
        return deny(pamh, why);
    }
    if (is_event(message, "verdict")) {
        return verdict(pamh, message);
    }
    const char *prompt = text_field(message, "prompt");
    if (!is_event(message, "challenge") || prompt == NULL) {
        json_object_put(message);
        return deny(pamh, MALFORMED);
    }
    char *answer = NULL;
    int conv = converse(pamh, PAM_PROMPT_ECHO_ON, prompt, &answer);
    json_object_put(message);
    if (answer != NULL) {
        memset(answer, 0, strlen(answer));
        free(answer); /* what was typed is never used: only the phone decides */
    }
    if (conv != PAM_SUCCESS) {
        return deny(pamh, "the phone check could not be shown. Access denied.");
    }
    for (;;) { /* an Enter before the phone approves just keeps waiting */
        message = next_message(r, deadline, &why);
        if (message == NULL) {
            return deny(pamh, why);
        }
        if (is_event(message, "verdict")) {
            return verdict(pamh, message);
        }
        int status = is_event(message, "status");
        json_object_put(message);
        if (!status) {
            return deny(pamh, MALFORMED);
        }
    }
}

PAM_EXTERN int pam_sm_authenticate(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    struct options opts;
    const char *user = NULL;
    const char *why = NULL;
    (void)flags;

    parse_options(argc, argv, &opts);
    if (pam_get_user(pamh, &user, NULL) != PAM_SUCCESS || user == NULL || *user == '\0') {
        return deny(pamh, "no user to check. Access denied.");
    }
    char *request = build_request(pamh, user);
    if (request == NULL) {
        return deny(pamh, "the login request could not be built. Access denied.");
    }
    struct reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        free(request);
        return deny(pamh, "out of memory. Access denied.");
    }
    r->fd = connect_service(opts.socket_path, &why);
    int rc = r->fd < 0                                         ? deny(pamh, why)
             : send_all(r->fd, request, strlen(request)) != 0 ? deny(pamh, LOST)
                                                              : relay(pamh, r, &opts);
    if (r->fd >= 0) {
        close(r->fd);
    }
    free(r);
    free(request);
    if (rc == PAM_SUCCESS) {
        return PAM_SUCCESS;
    }
    return PAM_AUTH_ERR;
}

/* sshd calls setcred after authentication: a lone module that failed it would fail the login. */
PAM_EXTERN int pam_sm_setcred(pam_handle_t *pamh, int flags, int argc, const char **argv)
{
    (void)pamh;
    (void)flags;
    (void)argc;
    (void)argv;
    return PAM_SUCCESS;
}
