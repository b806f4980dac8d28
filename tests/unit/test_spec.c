/* test_spec.c — spec URLs, JSON, validation, secrets. */
#include "iscsi/spec.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define IQN "iqn.2003-01.org.example:disk1"

static char err[512];

static int url(const char *u, struct lf_spec *s)
{
	err[0] = 0;
	return lf_spec_parse_url(u, s, err, sizeof(err));
}

static int js(const char *t, struct lf_spec *s)
{
	err[0] = 0;
	return lf_spec_parse_json(t, s, err, sizeof(err));
}

static void test_urls(void)
{
	struct lf_spec s;
	char buf[512];

	CHECK_EQ(url("iscsi://127.0.0.1/" IQN "/1", &s), 0);
	CHECK_EQ(s.kind, LF_SPEC_ISCSI);
	CHECK_STR(s.portals[0].host, "127.0.0.1");
	CHECK_EQ(s.portals[0].port, 3260);
	CHECK_EQ(s.nportals, 1);
	CHECK_STR(s.iqn, IQN);
	CHECK_EQ(s.lun, 1);
	CHECK_STR(s.fs_type, "ext4");
	CHECK_STR(s.iface, "default");
	CHECK_STR(s.url_user, "");
	CHECK(!s.chap_session);
	CHECK_STR(lf_spec_url(&s, buf, sizeof(buf)),
		  "iscsi://127.0.0.1:3260/" IQN "/1");

	CHECK_EQ(url("iscsi://alice@target.example:3261/" IQN "/255", &s), 0);
	CHECK_STR(s.url_user, "alice");
	CHECK(s.chap_session);
	CHECK_STR(s.portals[0].host, "target.example");
	CHECK_EQ(s.portals[0].port, 3261);
	CHECK_EQ(s.lun, 255);
	CHECK_STR(lf_spec_url(&s, buf, sizeof(buf)),
		  "iscsi://target.example:3261/" IQN "/255");

	CHECK_EQ(url("iscsi://[::1]:3260/" IQN "/0", &s), 0);
	CHECK_STR(s.portals[0].host, "::1");
	CHECK_STR(lf_spec_url(&s, buf, sizeof(buf)),
		  "iscsi://[::1]:3260/" IQN "/0");
	CHECK_EQ(url("iscsi://[::1]/" IQN "/0", &s), 0);
	CHECK_EQ(s.portals[0].port, 3260);

	/* passwords: refused, and never echoed */
	CHECK_EQ(url("iscsi://alice%s3cr3t@h/" IQN "/0", &s), -EINVAL);
	CHECK(strstr(err, "password") != NULL);
	CHECK(strstr(err, "s3cr3t") == NULL);
	CHECK_EQ(url("iscsi://alice:s3cr3t@h/" IQN "/0", &s), -EINVAL);
	CHECK(strstr(err, "password") != NULL);
	CHECK(strstr(err, "s3cr3t") == NULL);

	CHECK_EQ(url("iscsi://h/" IQN "/256", &s), -EINVAL);
	CHECK(strstr(err, "256") != NULL);
	CHECK_EQ(url("iscsi://h/" IQN "/-1", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h/" IQN "/x", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h/" IQN "/", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h/" IQN, &s), -EINVAL);
	CHECK_EQ(url("iscsi://h/" IQN "/1?header_digest=crc32c", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h//1", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h/iqn.2003-01/1", &s), -EINVAL);
	CHECK(strstr(err, "iqn") != NULL);
	CHECK_EQ(url("iscsi://h/foo.bar/1", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h:0/" IQN "/1", &s), -EINVAL);
	CHECK(strstr(err, "port") != NULL);
	CHECK_EQ(url("iscsi://h:65536/" IQN "/1", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h:x/" IQN "/1", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h:65535/" IQN "/1", &s), 0);
	CHECK_EQ(url("iscsi://::1:3260/" IQN "/1", &s), -EINVAL);
	CHECK(strstr(err, "bracket") != NULL);
	CHECK_EQ(url("iscsi://[::1/" IQN "/1", &s), -EINVAL);
	CHECK_EQ(url("iscsi://[nothex]:3260/" IQN "/1", &s), -EINVAL);
	CHECK_EQ(url("iscsi://@h/" IQN "/1", &s), -EINVAL);
	CHECK_EQ(url("http://h/" IQN "/1", &s), -EINVAL);

	CHECK_EQ(url("iscsi://h/eui.0123456789abcdef/3", &s), 0);
	CHECK_EQ(url("iscsi://h/eui.0123456789abcde/3", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h/naa.0123456789ABCDEF/3", &s), 0);
	CHECK_EQ(url("iscsi://h/naa.0123456789abcdef0123456789abcdef/3", &s),
		 0);
	CHECK_EQ(url("iscsi://h/naa.0123456789abcdefg/3", &s), -EINVAL);
	CHECK_EQ(url("iscsi://h/iqn.2003-01.org.example/3", &s), 0);
	CHECK_EQ(url("iscsi://h/iqn.2003-01.org.example:a;b/3", &s), -EINVAL);

	CHECK_EQ(url("file:///var/lib/x.img", &s), 0);
	CHECK_EQ(s.kind, LF_SPEC_FILE);
	CHECK_STR(s.path, "/var/lib/x.img");
	CHECK_STR(lf_spec_url(&s, buf, sizeof(buf)), "file:///var/lib/x.img");
	CHECK_EQ(url("file://relative.img", &s), -EINVAL);
}

static void test_names(void)
{
	CHECK_EQ(lf_spec_check_name(IQN, "iqn", err, sizeof(err)), 0);
	CHECK_EQ(lf_spec_check_name("iqn.2004-10.io.lunfs:host-1", "x", err,
				    sizeof(err)),
		 0);
	CHECK_EQ(
		lf_spec_check_name("iqn.04-10.io.lunfs", "x", err, sizeof(err)),
		-EINVAL);
	CHECK_EQ(lf_spec_check_name("iqn.2004-10.:x", "x", err, sizeof(err)),
		 -EINVAL);
	CHECK_EQ(lf_spec_check_name("iqn.2004-10.io.lunfs:", "x", err,
				    sizeof(err)),
		 -EINVAL);
	CHECK_EQ(lf_spec_check_name("iqn.2004-10.io.lunfs:a b", "x", err,
				    sizeof(err)),
		 -EINVAL);
	CHECK_EQ(lf_spec_check_name("", "x", err, sizeof(err)), -EINVAL);
	CHECK_EQ(lf_spec_check_name("IQN.2004-10.io.lunfs", "initiatorName",
				    err, sizeof(err)),
		 -EINVAL);
	CHECK(strstr(err, "initiatorName") != NULL);
}

static void test_json(void)
{
	struct lf_spec s, s2;
	char *j, *j2;

	CHECK_EQ(js("{\"targetPortal\":\"10.0.0.5:3260\",\"iqn\":\"" IQN
		    "\",\"lun\":3,\"fsType\":\"ext4\",\"readOnly\":true,"
		    "\"portals\":[\"10.0.0.6\",\"[fd00::1]:3262\"],"
		    "\"chapAuthSession\":true,\"chapAuthDiscovery\":false,"
		    "\"iscsiInterface\":\"default\",\"initiatorName\":"
		    "\"iqn.2004-10.io.lunfs:pod1\",\"volumeMode\":\"Block\"}",
		    &s),
		 0);
	CHECK_STR(err, "");
	CHECK_EQ(s.nportals, 3);
	CHECK_STR(s.portals[0].host, "10.0.0.5");
	CHECK_STR(s.portals[1].host, "10.0.0.6");
	CHECK_EQ(s.portals[1].port, 3260);
	CHECK_STR(s.portals[2].host, "fd00::1");
	CHECK_EQ(s.portals[2].port, 3262);
	CHECK_EQ(s.lun, 3);
	CHECK(s.read_only);
	CHECK(s.chap_session);
	CHECK(!s.chap_discovery);
	CHECK_EQ(s.mode, LF_MODE_BLOCK);
	CHECK_STR(s.initiator_name, "iqn.2004-10.io.lunfs:pod1");

	/* round trip */
	j = lf_spec_to_json(&s);
	CHECK(j != NULL);
	CHECK_EQ(js(j, &s2), 0);
	CHECK(memcmp(&s, &s2, sizeof(s)) == 0);
	j2 = lf_spec_to_json(&s2);
	CHECK_STR(j, j2);
	free(j);
	free(j2);

	CHECK_EQ(url("iscsi://bob@[::1]:3300/" IQN "/7", &s), 0);
	j = lf_spec_to_json(&s);
	CHECK_EQ(js(j, &s2), 0);
	CHECK(memcmp(&s, &s2, sizeof(s)) == 0);
	free(j);
	CHECK_EQ(url("file:///tmp/a.img", &s), 0);
	j = lf_spec_to_json(&s);
	CHECK_EQ(js(j, &s2), 0);
	CHECK(memcmp(&s, &s2, sizeof(s)) == 0);
	free(j);

	/* defaults, null as unset */
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"initiatorName\":null}",
		    &s),
		 0);
	CHECK_EQ(s.lun, 0);
	CHECK_EQ(s.mode, LF_MODE_FILESYSTEM);
	CHECK_STR(s.fs_type, "ext4");

	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN "\",\"foo\":1}",
		    &s),
		 -EINVAL);
	CHECK_STR(err, "unknown field \"foo\"");
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"lun\":\"1\"}",
		    &s),
		 -EINVAL);
	CHECK_STR(err, "field \"lun\" must be an integer");
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN "\",\"lun\":1.5}",
		    &s),
		 -EINVAL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"readOnly\":\"yes\"}",
		    &s),
		 -EINVAL);
	CHECK(strstr(err, "readOnly") != NULL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"portals\":\"h2\"}",
		    &s),
		 -EINVAL);
	CHECK(strstr(err, "portals") != NULL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"portals\":[1]}",
		    &s),
		 -EINVAL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"lun\":1}", &s), -EINVAL);
	CHECK(strstr(err, "iqn") != NULL);
	CHECK_EQ(js("{\"iqn\":\"" IQN "\"}", &s), -EINVAL);
	CHECK(strstr(err, "targetPortal") != NULL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN "\",\"lun\":256}",
		    &s),
		 -EINVAL);
	CHECK(strstr(err, "256") != NULL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN "\",\"lun\":-1}",
		    &s),
		 -EINVAL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"fsType\":\"xfs\"}",
		    &s),
		 -EINVAL);
	CHECK_STR(err, "fsType xfs is not supported: lunfs serves ext2/3/4");
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"volumeMode\":\"block\"}",
		    &s),
		 -EINVAL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"initiatorName\":\"bogus\"}",
		    &s),
		 -EINVAL);
	CHECK(strstr(err, "initiatorName") != NULL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"bad\"}", &s), -EINVAL);
	CHECK_EQ(js("{\"targetPortal\":\"h:99999\",\"iqn\":\"" IQN "\"}", &s),
		 -EINVAL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",\"iqn\":\"" IQN
		    "\",\"secretRef\":{\"name\":\"x\"}}",
		    &s),
		 -EINVAL);
	CHECK_EQ(js("{\"targetPortal\":\"h\",", &s), -EINVAL);
	CHECK_EQ(js("[1]", &s), -EINVAL);
	CHECK_EQ(js("{} x", &s), -EINVAL);
}

static void test_load_and_resolve(void)
{
	struct lf_spec s;
	char path[] = "/tmp/lunfs-spec-XXXXXX";
	const char *doc = "{\"targetPortal\":\"localhost:3261\",\"iqn\":\"" IQN
			  "\",\"lun\":2}";
	int fd = mkstemp(path);
	char buf[512];

	CHECK(fd >= 0);
	CHECK_EQ(write(fd, doc, strlen(doc)), (long long)strlen(doc));
	close(fd);
	CHECK_EQ(lf_spec_load(path, &s, err, sizeof(err)), 0);
	CHECK_EQ(s.lun, 2);
	CHECK_EQ(lf_spec_resolve(&s, err, sizeof(err)), 0);
	CHECK(!strcmp(s.portals[0].addr, "127.0.0.1") ||
	      !strcmp(s.portals[0].addr, "::1"));
	lf_spec_url(&s, buf, sizeof(buf));
	CHECK(strstr(buf, "localhost") == NULL);
	unlink(path);
	CHECK_EQ(lf_spec_load("/nonexistent/spec.json", &s, err, sizeof(err)),
		 -ENOENT);
	CHECK_EQ(lf_spec_load("iscsi://h/" IQN "/4", &s, err, sizeof(err)), 0);
	CHECK_EQ(s.lun, 4);

	CHECK_EQ(url("iscsi://no-such-host.invalid/" IQN "/1", &s), 0);
	CHECK(lf_spec_resolve(&s, err, sizeof(err)) < 0);
	CHECK(strstr(err, "no-such-host.invalid") != NULL);
}

/* ---- secrets -------------------------------------------------------- */

static char dir[] = "/tmp/lunfs-sec-XXXXXX";

static const char *write_file(const char *name, const char *text, mode_t mode)
{
	static char path[512];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		perror(path);
	close(fd);
	chmod(path, mode);
	return path;
}

static int load(const char *path, struct lf_secrets *sec)
{
	err[0] = 0;
	return lf_secrets_load_file(path, sec, err, sizeof(err));
}

static void test_secrets(void)
{
	struct lf_secrets sec;
	const char *p;
	char sub[600];
	char *j;

	CHECK(mkdtemp(dir) != NULL);

	/* (1) JSON object */
	p = write_file("plain.json",
		       "{\"node.session.auth.username\":\"alice\","
		       "\"node.session.auth.password\":\"s3cr3t-A\","
		       "\"unrelated\":42}",
		       0600);
	CHECK_EQ(load(p, &sec), 0);
	CHECK_STR(sec.session.user, "alice");
	CHECK_STR(sec.session.secret, "s3cr3t-A");
	CHECK(!lf_secrets_empty(&sec));

	/* (2) Secret manifest: base64 data + plain stringData */
	p = write_file("secret.json",
		       "{\"apiVersion\":\"v1\",\"kind\":\"Secret\","
		       "\"metadata\":{\"name\":\"chap\"},"
		       "\"type\":\"kubernetes.io/iscsi-chap\","
		       "\"data\":{\"node.session.auth.username\":\"Ym9i\","
		       "\"node.session.auth.password\":\"cGFzc3dvcmQxMjM=\"},"
		       "\"stringData\":{"
		       "\"discovery.sendtargets.auth.username\":\"disc\","
		       "\"discovery.sendtargets.auth.password\":\"dpw\"}}",
		       0600);
	CHECK_EQ(load(p, &sec), 0);
	CHECK_STR(sec.session.user, "bob");
	CHECK_STR(sec.session.secret, "password123");
	CHECK_STR(sec.discovery.user, "disc");
	CHECK_STR(sec.discovery.secret, "dpw");
	p = write_file("bad64.json",
		       "{\"kind\":\"Secret\",\"data\":{"
		       "\"node.session.auth.password\":\"!!!\"}}",
		       0600);
	CHECK_EQ(load(p, &sec), -EINVAL);
	CHECK(strstr(err, "base64") != NULL);
	CHECK(lf_secrets_empty(&sec));

	/* (3) key=value lines */
	p = write_file("lines.conf",
		       "# CHAP for the test target\n"
		       "node.session.auth.username = carol\n"
		       "node.session.auth.password=pw with spaces\n"
		       "\n"
		       "node.session.auth.username_in=tgt\n"
		       "node.session.auth.password_in=tgtpw\n"
		       "node.startup = manual\n",
		       0600);
	CHECK_EQ(load(p, &sec), 0);
	CHECK_STR(sec.session.user, "carol");
	CHECK_STR(sec.session.secret, "pw with spaces");
	CHECK_STR(sec.session.user_in, "tgt");
	CHECK_STR(sec.session.secret_in, "tgtpw");
	p = write_file("noeq.conf", "node.session.auth.username\n", 0600);
	CHECK_EQ(load(p, &sec), -EINVAL);
	CHECK(strstr(err, "line 1") != NULL);

	/* (4) directory of one file per key, as a Secret volume */
	snprintf(sub, sizeof(sub), "%s/vol", dir);
	CHECK_EQ(mkdir(sub, 0700), 0);
	write_file("vol/node.session.auth.username", "dave\n", 0600);
	write_file("vol/node.session.auth.password", "dpass\n", 0600);
	write_file("vol/..data", "ignored", 0600);
	write_file("vol/other-key", "ignored", 0644);
	CHECK_EQ(load(sub, &sec), 0);
	CHECK_STR(sec.session.user, "dave");
	CHECK_STR(sec.session.secret, "dpass");

	/* errors */
	p = write_file("unknown.json", "{\"node.session.auth.user\":\"x\"}",
		       0600);
	CHECK_EQ(load(p, &sec), -EINVAL);
	CHECK(strstr(err, "node.session.auth.user") != NULL);
	p = write_file("nouser.conf", "node.session.auth.password=T0pS3cret\n",
		       0600);
	CHECK_EQ(load(p, &sec), -EINVAL);
	CHECK(strstr(err, "without") != NULL);
	CHECK(strstr(err, "T0pS3cret") == NULL);
	p = write_file("type.json", "{\"node.session.auth.password\":1}", 0600);
	CHECK_EQ(load(p, &sec), -EINVAL);
	{
		char big[LF_SECRET_MAX + 64];

		snprintf(big, sizeof(big),
			 "node.session.auth.username=u\n"
			 "node.session.auth.password=");
		memset(big + strlen(big), 'x', LF_SECRET_MAX);
		big[sizeof(big) - 1] = 0;
		p = write_file("long.conf", big, 0600);
		CHECK_EQ(load(p, &sec), -EINVAL);
		CHECK(strstr(err, "too long") != NULL);
		CHECK(strstr(err, "xxxxxxxx") == NULL);
	}

	/* mode: a 0644 file is refused unless root owns it */
	p = write_file("open.conf",
		       "node.session.auth.username=e\n"
		       "node.session.auth.password=epw\n",
		       0644);
	CHECK_EQ(load(p, &sec), 0); /* root-owned */
	CHECK_EQ(chown(p, 1, 1), 0);
	CHECK_EQ(load(p, &sec), -EPERM);
	CHECK(strstr(err, "chmod 600") != NULL);
	CHECK(lf_secrets_empty(&sec));
	chmod(p, 0600);
	CHECK_EQ(load(p, &sec), 0);
	write_file("vol/node.session.auth.password", "dpass\n", 0644);
	snprintf(sub, sizeof(sub), "%s/vol/node.session.auth.password", dir);
	CHECK_EQ(chown(sub, 1, 1), 0);
	snprintf(sub, sizeof(sub), "%s/vol", dir);
	CHECK_EQ(load(sub, &sec), -EPERM);
	CHECK_EQ(load("/nonexistent/secret", &sec), -ENOENT);

	/* control-socket JSON round trip */
	p = write_file("lines2.conf",
		       "node.session.auth.username=f\n"
		       "node.session.auth.password=fpw\"\\\n"
		       "discovery.sendtargets.auth.username=g\n"
		       "discovery.sendtargets.auth.password=gpw\n",
		       0600);
	CHECK_EQ(load(p, &sec), 0);
	j = lf_secrets_to_json(&sec);
	CHECK(j != NULL);
	{
		struct lf_secrets sec2;

		CHECK_EQ(lf_secrets_parse_json(j, &sec2, err, sizeof(err)), 0);
		CHECK(memcmp(&sec, &sec2, sizeof(sec)) == 0);
		CHECK_EQ(
			lf_secrets_parse_json("{\"node.session.auth.x\":\"1\"}",
					      &sec2, err, sizeof(err)),
			-EINVAL);
	}
	explicit_bzero(j, strlen(j));
	free(j);

	lf_secrets_wipe(&sec);
	CHECK(lf_secrets_empty(&sec));
	{
		char cmd[600];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		CHECK_EQ(system(cmd), 0);
	}
}

static void test_env(void)
{
	struct lf_secrets sec;

	unsetenv("LUNFS_CHAP_USERNAME");
	CHECK_EQ(lf_secrets_from_env(&sec, err, sizeof(err)), 0);
	CHECK(lf_secrets_empty(&sec));
	setenv("LUNFS_CHAP_USERNAME", "henry", 1);
	setenv("LUNFS_CHAP_PASSWORD", "hpw", 1);
	setenv("LUNFS_CHAP_USERNAME_IN", "tgt", 1);
	setenv("LUNFS_CHAP_PASSWORD_IN", "tpw", 1);
	setenv("LUNFS_DISCOVERY_CHAP_USERNAME", "disc", 1);
	setenv("LUNFS_DISCOVERY_CHAP_PASSWORD", "dpw", 1);
	CHECK_EQ(lf_secrets_from_env(&sec, err, sizeof(err)), 0);
	CHECK_STR(sec.session.user, "henry");
	CHECK_STR(sec.session.secret, "hpw");
	CHECK_STR(sec.session.user_in, "tgt");
	CHECK_STR(sec.session.secret_in, "tpw");
	CHECK_STR(sec.discovery.user, "disc");
	CHECK_STR(sec.discovery.secret, "dpw");
	CHECK_STR(sec.discovery.user_in, "");
	/* a password alone pairs with a URL "user@" */
	unsetenv("LUNFS_CHAP_USERNAME");
	unsetenv("LUNFS_CHAP_USERNAME_IN");
	unsetenv("LUNFS_CHAP_PASSWORD_IN");
	CHECK_EQ(lf_secrets_from_env(&sec, err, sizeof(err)), 0);
	CHECK_STR(sec.session.secret, "hpw");
	setenv("LUNFS_CHAP_PASSWORD_IN", "tpw", 1);
	CHECK_EQ(lf_secrets_from_env(&sec, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "tpw") == NULL);
	unsetenv("LUNFS_CHAP_PASSWORD_IN");
	unsetenv("LUNFS_CHAP_PASSWORD");
	unsetenv("LUNFS_DISCOVERY_CHAP_USERNAME");
	unsetenv("LUNFS_DISCOVERY_CHAP_PASSWORD");
	lf_secrets_wipe(&sec);
}

int main(void)
{
	test_urls();
	test_names();
	test_json();
	test_load_and_resolve();
	test_secrets();
	test_env();
	return check_report("test_spec");
}
