/* log.c — see log.h. */
#include "iscsi/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

/* Process-wide logger settings: set once at start-up by main(), read-only
 * afterwards, which is why plain statics are enough here. */
static const char *log_prog = "lunfs";
static bool log_syslog;
static enum lf_log_level log_level = LF_LOG_INFO;

void lf_log_init(const char *progname)
{
	if (progname)
		log_prog = progname;
	if (getenv("LUNFS_DEBUG"))
		log_level = LF_LOG_DEBUG;
}

void lf_log_to_syslog(void)
{
	openlog(log_prog, LOG_PID, LOG_DAEMON);
	log_syslog = true;
}

void lf_log_set_level(enum lf_log_level level)
{
	log_level = level;
}

bool lf_log_debug_enabled(const char *module)
{
	const char *want = getenv("LUNFS_DEBUG");
	size_t n;

	if (!want || !*want)
		return false;
	if (!strcmp(want, "all") || !strcmp(want, "1"))
		return true;
	n = strlen(module);
	for (const char *p = want; (p = strstr(p, module)); p += n) {
		if ((p == want || p[-1] == ',') && (p[n] == 0 || p[n] == ','))
			return true;
	}
	return false;
}

void lf_log(enum lf_log_level level, const char *module, const char *fmt, ...)
{
	static const char *names[] = {"error", "warning", "info", "debug"};
	static const int prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
	int saved = errno;
	char msg[1024];
	char line[1200];
	va_list ap;
	int n;

	if (level > log_level)
		goto out;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (log_syslog) {
		syslog(prio[level], "%s: %s", module, msg);
		goto out;
	}
	n = snprintf(line, sizeof(line), "%s[%d]: %s: %s: %s\n", log_prog,
		     (int)getpid(), names[level], module, msg);
	if (n > (int)sizeof(line) - 1) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
out:
	errno = saved;
}
