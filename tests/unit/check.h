/* check.h — the unit tests' assertions: each failure prints file:line and
 * the expression, counting continues, and main() ends with
 * "N passed, M failed" and exit status 1 if anything failed. */
#ifndef LUNFS_CHECK_H
#define LUNFS_CHECK_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(expr)                                                            \
	do {                                                                   \
		if (expr) {                                                    \
			check_passed++;                                        \
		} else {                                                       \
			check_failed++;                                        \
			fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__,       \
				__LINE__, #expr);                              \
		}                                                              \
	} while (0)

#define CHECK_EQ(a, b)                                                         \
	do {                                                                   \
		long long a_ = (long long)(a), b_ = (long long)(b);            \
		if (a_ == b_) {                                                \
			check_passed++;                                        \
		} else {                                                       \
			check_failed++;                                        \
			fprintf(stderr,                                        \
				"%s:%d: FAILED: %s == %s (%lld != %lld)\n",    \
				__FILE__, __LINE__, #a, #b, a_, b_);           \
		}                                                              \
	} while (0)

#define CHECK_STR(a, b)                                                        \
	do {                                                                   \
		const char *a_ = (a), *b_ = (b);                               \
		if (a_ && b_ && strcmp(a_, b_) == 0) {                         \
			check_passed++;                                        \
		} else {                                                       \
			check_failed++;                                        \
			fprintf(stderr,                                        \
				"%s:%d: FAILED: %s == %s (\"%s\" != "          \
				"\"%s\")\n",                                   \
				__FILE__, __LINE__, #a, #b,                    \
				a_ ? a_ : "(null)", b_ ? b_ : "(null)");       \
		}                                                              \
	} while (0)

static inline int check_report(const char *name)
{
	printf("%s: %d passed, %d failed\n", name, check_passed, check_failed);
	return check_failed ? 1 : 0;
}

/* Runs a shell command built like printf; says which one failed. */
static inline int sh(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	r = system(cmd);
	if (r != 0)
		fprintf(stderr, "command failed (%d): %s\n", r, cmd);
	return r;
}

#endif
