/* test_corrupt.c — e2fsprogs' damaged images (../shared/corrupt-images,
 * beside the repository) as volumes: each is refused with a message or
 * served with -errno on the damaged objects; never a crash, a hang or a
 * write to an image that was refused or opened read-only. */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/check.h"
#include "tests/unit/corrupt_walk.h"

#define SELF_PATH "/tests/unit/test_corrupt.c"

#define MAX_IMAGES 512
#define MAX_NAME   128

/* Open bugs in fsimage/fsops.c, reported to its owner. */

static int cmp_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The repository root from this file's compile-time path. */
static void images_dir(char *buf, size_t len)
{
	const char *self = __FILE__;
	size_t n = strlen(self), s = strlen(SELF_PATH);

	if (n < s || strcmp(self + n - s, SELF_PATH) || self[0] != '/') {
		fprintf(stderr, "cannot find the repository root from %s\n",
			self);
		exit(2);
	}
	snprintf(buf, len, "%.*s/../shared/corrupt-images", (int)(n - s), self);
}

int main(int argc, char **argv)
{
	char dir[4096], tmpdir[64], img[4200], cmd[9000];
	const char *only = argc > 1 ? argv[1] : getenv("LUNFS_CORRUPT_ONLY");
	struct cw_totals tot = {0};
	/* On the stack: the forked children exit with it, and LeakSanitizer
	 * in each child must not see the parent's heap as a leak. */
	static_assert(MAX_IMAGES * MAX_NAME <= 64 * 1024, "stack");
	char names[MAX_IMAGES][MAX_NAME];
	size_t n = 0;
	struct dirent *de;
	DIR *d;

	setvbuf(stdout, NULL, _IOLBF, 0);
	lf_log_set_level(getenv("LUNFS_CORRUPT_VERBOSE") ? LF_LOG_INFO
							 : LF_LOG_WARN);
	images_dir(dir, sizeof(dir));
	d = opendir(dir);
	CHECK(d != NULL);
	if (!d) {
		fprintf(stderr, "%s: %s: the damaged images are missing\n", dir,
			strerror(errno));
		return check_report("test_corrupt");
	}
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (l < 8 || strcmp(de->d_name + l - 7, ".img.gz"))
			continue;
		if (only && !strstr(de->d_name, only))
			continue;
		CHECK(n < MAX_IMAGES && l < MAX_NAME);
		if (n >= MAX_IMAGES || l >= MAX_NAME)
			continue;
		memcpy(names[n++], de->d_name, l + 1);
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_name);
	CHECK(n > 0);
	cw_tmpdir(tmpdir, sizeof(tmpdir), "corrupt");
	CHECK(mkdtemp(tmpdir) != NULL);

	for (size_t i = 0; i < n; i++) {
		char label[256];

		snprintf(label, sizeof(label), "%.*s",
			 (int)(strlen(names[i]) - 7), names[i]);
		snprintf(img, sizeof(img), "%s/%s.img", tmpdir, label);
		snprintf(cmd, sizeof(cmd), "gzip -dc '%s/%s' > '%s'", dir,
			 names[i], img);
		if (system(cmd) != 0) {
			printf("%s: FAILED: cannot gunzip\n", label);
			CHECK(!"gunzip");
			continue;
		}
		CHECK(cw_check_image(img, label, &tot));
		unlink(img);
	}
	rmdir(tmpdir);
	cw_print_totals("e2fsprogs damaged images", &tot);
	return check_report("test_corrupt");
}
