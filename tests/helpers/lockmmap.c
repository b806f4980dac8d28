/* lockmmap.c — the container side of test_views.py's two-container test,
 * built static by the test (the containers have only busybox).
 *
 *   lockmmap a DIR   holds an flock and an fcntl lock on DIR/lk, stores
 *                    "store" into a MAP_SHARED mapping of DIR/m without
 *                    msync, then waits for b's attempts and releases
 *   lockmmap b DIR   reads its own mapping of DIR/m once, tries both
 *                    locks without waiting, then waits for each and says
 *                    whether a had released when it got them
 *
 * The two coordinate through marker files on the shared volume. Output,
 * one "key:value" per line, is the test's to judge.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static const char *at(const char *name)
{
	static char p[2][512];
	static int k;

	k ^= 1;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void mark(const char *name)
{
	close(open(at(name), O_WRONLY | O_CREAT, 0644));
}

static int wait_for(const char *name)
{
	for (int i = 0; i < 3000; i++) { /* 30 s */
		if (access(at(name), F_OK) == 0)
			return 0;
		usleep(10000);
	}
	printf("timeout:%s\n", name);
	return -1;
}

static int lockf_range(int fd, int cmd, short type)
{
	struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_len = 100};

	return fcntl(fd, cmd, &fl);
}

static int side_a(void)
{
	int fd = open(at("lk"), O_RDWR | O_CREAT, 0644);
	int mfd = open(at("m"), O_RDWR | O_CREAT, 0644);
	char *m;

	if (fd < 0 || mfd < 0 || ftruncate(mfd, 4096) < 0)
		return 1;
	m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (m == MAP_FAILED || flock(fd, LOCK_EX) < 0 ||
	    lockf_range(fd, F_SETLK, F_WRLCK) < 0)
		return 1;
	memcpy(m, "store", 5);
	mark("a-ready");
	if (wait_for("b-waiting") < 0)
		return 1;
	usleep(200000); /* b is blocked by now, almost surely */
	mark("a-releasing");
	close(fd); /* both locks go with it */
	printf("a:done\n");
	return 0;
}

static int side_b(void)
{
	char buf[6] = "";
	int fd, mfd;
	char *m;

	if (wait_for("a-ready") < 0)
		return 1;
	fd = open(at("lk"), O_RDWR);
	mfd = open(at("m"), O_RDWR);
	if (fd < 0 || mfd < 0)
		return 1;
	m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (m == MAP_FAILED)
		return 1;
	memcpy(buf, m, 5);
	printf("mmap:%s\n", buf[0] ? buf : "(zeros)");
	printf("flock-try:%s\n",
	       flock(fd, LOCK_EX | LOCK_NB) < 0 ? "refused" : "granted");
	printf("lockf-try:%s\n",
	       lockf_range(fd, F_SETLK, F_WRLCK) < 0 ? "refused" : "granted");
	fflush(stdout);
	mark("b-waiting");
	if (flock(fd, LOCK_EX) < 0)
		return 1;
	printf("flock-wait:%s\n", access(at("a-releasing"), F_OK) == 0
					  ? "after-release"
					  : "OVERLAP");
	if (lockf_range(fd, F_SETLKW, F_WRLCK) < 0)
		return 1;
	printf("lockf-wait:%s\n", access(at("a-releasing"), F_OK) == 0
					  ? "after-release"
					  : "OVERLAP");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 3)
		return 2;
	snprintf(dir, sizeof(dir), "%s", argv[2]);
	setvbuf(stdout, NULL, _IOLBF, 0);
	return argv[1][0] == 'a' ? side_a() : side_b();
}
