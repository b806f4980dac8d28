/* log.h — the one logger every lunfs module calls.
 *
 * Contract:
 *  - lf_err/lf_warn/lf_info write one line: "lunfsd[pid]: LEVEL: module: msg".
 *    lf_dbg only when LUNFS_DEBUG names the module ("iscsi,fsimage") or "all".
 *  - errno is preserved across every call, so "%m" works after a failure.
 *  - The sink is stderr unless lf_log_to_syslog() was called (detached daemon).
 *  - Never pass a CHAP secret to these functions: log lines are not secret.
 *  - Thread-safe: each line is written with a single write(2).
 *
 * Lives in iscsi/ because it is the lowest layer: every other module
 * already depends on it.
 */
#ifndef LUNFS_LOG_H
#define LUNFS_LOG_H

#include <stdbool.h>

enum lf_log_level { LF_LOG_ERR, LF_LOG_WARN, LF_LOG_INFO, LF_LOG_DEBUG };

void lf_log_init(const char *progname);
void lf_log_to_syslog(void);
/* Lowest level written; default LF_LOG_INFO. */
void lf_log_set_level(enum lf_log_level level);
bool lf_log_debug_enabled(const char *module);

void lf_log(enum lf_log_level level, const char *module, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define lf_err(mod, ...)  lf_log(LF_LOG_ERR, mod, __VA_ARGS__)
#define lf_warn(mod, ...) lf_log(LF_LOG_WARN, mod, __VA_ARGS__)
#define lf_info(mod, ...) lf_log(LF_LOG_INFO, mod, __VA_ARGS__)
#define lf_dbg(mod, ...)                                                       \
	do {                                                                   \
		if (lf_log_debug_enabled(mod))                                 \
			lf_log(LF_LOG_DEBUG, mod, __VA_ARGS__);                \
	} while (0)

#endif
