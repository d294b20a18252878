/*
 * fakenvme: an LD_PRELOAD library that plays an NVMe controller for tests.
 *
 * It interposes ioctl(). An NVME_IOCTL_ADMIN_CMD issued on an fd whose path
 * lies under $FAKENVME_ROOT/dev/ is answered from the control directory
 * $FAKENVME_ROOT/ctl/<node name>/, re-read on every call so a test can change
 * the answers of a running process. Everything else goes to the real ioctl.
 * tests/fakenvme/__init__.py documents the control files and drives them.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/nvme_ioctl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h> /* _IOWR, used by NVME_IOCTL_ADMIN_CMD */
#include <time.h>
#include <unistd.h>

_Static_assert(sizeof(struct nvme_passthru_cmd) == 72, "uapi struct size");

#define OPC_GET_LOG_PAGE 0x02
#define OPC_IDENTIFY 0x06
#define CNS_CONTROLLER 0x01
#define LID_AMZN_STATS 0xD0
#define IDENTIFY_LEN 4096u
#define SC_INVALID_FIELD_DNR 0x4002 /* SCT 0, SC 0x02, DNR set */
#define DELAY_POLL_MS 10
#define PATH_DELETED " (deleted)"

typedef int (*ioctl_fn)(int, unsigned long, ...);

static ioctl_fn real_ioctl(void)
{
	static ioctl_fn fn; /* a racy first lookup just stores the same value twice */
	ioctl_fn f = __atomic_load_n(&fn, __ATOMIC_ACQUIRE);

	if (!f) {
		f = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
		__atomic_store_n(&fn, f, __ATOMIC_RELEASE);
	}
	return f;
}

/* Reads a small text control file as an integer: decimal, or hex with 0x.
 * Returns 0 if the file is absent, 1 if *out was set, -1 if unparsable. */
static int read_int(int dir, const char *name, long *out)
{
	char buf[64], *end;
	ssize_t n;
	int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	errno = 0;
	*out = strtol(buf, &end, strncasecmp(buf, "0x", 2) ? 10 : 16);
	while (*end == ' ' || *end == '\n' || *end == '\t')
		end++;
	return (errno || end == buf || *end) ? -1 : 1;
}

/* A control file the test wrote wrongly must not pass silently. */
static int bad_control(const char *name)
{
	fprintf(stderr, "fakenvme: bad value in control file %s\n", name);
	errno = EINVAL;
	return -1;
}

/* Consumes one EINTR from the countdown file; 1 if this call must fail. */
static int take_eintr(int dir)
{
	char buf[32];
	ssize_t n;
	long left;
	int fd = openat(dir, "eintr", O_RDWR | O_CLOEXEC), hit = 0;

	if (fd < 0)
		return 0;
	flock(fd, LOCK_EX); /* threads of one process must each take their own */
	n = pread(fd, buf, sizeof(buf) - 1, 0);
	if (n > 0) {
		buf[n] = '\0';
		left = strtol(buf, NULL, 10);
		if (left > 0) {
			n = snprintf(buf, sizeof(buf), "%ld\n", left - 1);
			if (ftruncate(fd, 0) == 0 && pwrite(fd, buf, (size_t)n, 0) == n)
				hit = 1;
		}
	}
	close(fd); /* drops the lock */
	return hit;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* A hanging device: waits until delay_ms has passed since the command came
 * in. The file is polled, so lowering or removing it releases waiting calls. */
static void hang(int dir)
{
	long start = now_ms(), delay, left;

	while (read_int(dir, "delay_ms", &delay) == 1 && (left = delay - (now_ms() - start)) > 0)
		sleep_ms(left < DELAY_POLL_MS ? left : DELAY_POLL_MS);
}

static void log_command(int dir, int fd, const struct nvme_passthru_cmd *c)
{
	static const char *const modes[] = { "rdonly", "wronly", "rdwr", "invalid" };
	char line[512];
	int fl = fcntl(fd, F_GETFL), n, lfd;

	n = snprintf(line, sizeof(line),
		     "opcode=0x%02x flags=0x%02x nsid=0x%x cdw10=0x%x cdw11=0x%x"
		     " cdw12=0x%x cdw13=0x%x cdw14=0x%x cdw15=0x%x data_len=0x%x"
		     " metadata_len=0x%x addr=%d timeout_ms=0x%x access=%s\n",
		     c->opcode, c->flags, c->nsid, c->cdw10, c->cdw11, c->cdw12,
		     c->cdw13, c->cdw14, c->cdw15, c->data_len, c->metadata_len,
		     c->addr != 0, c->timeout_ms,
		     fl < 0 ? "invalid" : modes[fl & O_ACCMODE]);
	lfd = openat(dir, "commands.log", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (lfd < 0)
		return;
	/* One write() per line: O_APPEND keeps concurrent lines whole. */
	if (write(lfd, line, (size_t)n) != n)
		fprintf(stderr, "fakenvme: short write to commands.log\n");
	close(lfd);
}

/* Copies file[offset:] into the caller's buffer, zero-filling up to len and
 * never touching a byte past it. Returns 0, or -1 if the file is missing. */
static int answer_from(int dir, const char *name, uint64_t offset, void *buf,
		       uint32_t len)
{
	char *dst = buf;
	uint32_t done = 0;
	ssize_t n;
	int fd = openat(dir, name, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	while (done < len && offset + done <= (uint64_t)LLONG_MAX &&
	       (n = pread(fd, dst + done, len - done, (off_t)(offset + done))) > 0)
		done += (uint32_t)n;
	close(fd);
	memset(dst + done, 0, len - done);
	return 0;
}

/* What the controller answers. Returns the ioctl return value. */
static int controller(int dir, struct nvme_passthru_cmd *c)
{
	const char *file;
	uint64_t offset = 0;

	if (c->opcode == OPC_IDENTIFY && (c->cdw10 & 0xff) == CNS_CONTROLLER &&
	    c->data_len == IDENTIFY_LEN) {
		file = "identify";
	} else if (c->opcode == OPC_GET_LOG_PAGE && (c->cdw10 & 0xff) == LID_AMZN_STATS &&
		   /* NUMD (NUMDU:NUMDL) is zero-based and must match the buffer */
		   ((((uint64_t)(c->cdw11 & 0xffff) << 16) | (c->cdw10 >> 16)) + 1) * 4 ==
			   c->data_len) {
		file = "log_d0";
		offset = ((uint64_t)c->cdw13 << 32) | c->cdw12; /* LPO, bytes */
	} else {
		return SC_INVALID_FIELD_DNR;
	}
	if (answer_from(dir, file, offset, (void *)(uintptr_t)c->addr, c->data_len) < 0)
		return SC_INVALID_FIELD_DNR;
	c->result = 0;
	return 0;
}

/* Answers one admin command on a fake device node whose control dir is dir. */
static int fake_admin(int fd, int dir, struct nvme_passthru_cmd *c)
{
	long v;
	int r;

	log_command(dir, fd, c);
	/* The kernel's own checks, before the command reaches the device. */
	if (c->flags) {
		errno = EINVAL;
		return -1;
	}
	if (c->data_len && !c->addr) {
		errno = EFAULT;
		return -1;
	}
	hang(dir);
	if (take_eintr(dir)) {
		errno = EINTR;
		return -1;
	}
	r = read_int(dir, "errno", &v);
	if (r < 0 || (r == 1 && (v <= 0 || v > 4095)))
		return bad_control("errno");
	if (r == 1) {
		errno = (int)v;
		return -1;
	}
	r = read_int(dir, "status", &v);
	if (r < 0 || (r == 1 && (v < 0 || v > 0xffff)))
		return bad_control("status");
	if (r == 1 && v > 0) {
		c->result = 0;
		return (int)v;
	}
	return controller(dir, c);
}

#define NOT_FAKE (-2)

/* Opens the control dir if fd is a node under $FAKENVME_ROOT/dev/. Returns a
 * dir fd, NOT_FAKE for any other fd, or -1 with errno set for a fake node
 * that cannot answer. */
static int open_ctl_dir(int fd)
{
	const char *env = getenv("FAKENVME_ROOT");
	char root[PATH_MAX], link[32], target[PATH_MAX], dir[PATH_MAX], *name;
	size_t rlen, tlen, dlen = strlen(PATH_DELETED);
	ssize_t n;
	int dfd;

	if (!env || !*env || !realpath(env, root))
		return NOT_FAKE;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return NOT_FAKE;
	target[n] = '\0';
	rlen = strlen(root);
	if (strncmp(target, root, rlen) || strncmp(target + rlen, "/dev/", 5))
		return NOT_FAKE;
	name = target + rlen + 5;
	if (!*name || strchr(name, '/'))
		return NOT_FAKE;
	tlen = strlen(name);
	if (tlen > dlen && !strcmp(name + tlen - dlen, PATH_DELETED)) {
		errno = ENODEV; /* the node was removed: the controller is gone */
		return -1;
	}
	if (snprintf(dir, sizeof(dir), "%s/ctl/%s", root, name) >= (int)sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		errno = ENOTTY; /* a device node that is not an NVMe controller */
	return dfd;
}

int ioctl(int fd, unsigned long request, ...)
{
	int saved = errno, dir, ret;
	va_list ap;
	void *arg;

	va_start(ap, request);
	arg = va_arg(ap, void *); /* every ioctl passes at most one word */
	va_end(ap);

	if (request == NVME_IOCTL_ADMIN_CMD && (dir = open_ctl_dir(fd)) != NOT_FAKE) {
		if (dir < 0)
			return -1;
		if (!arg) {
			ret = -1;
			saved = EFAULT;
		} else {
			errno = saved;
			ret = fake_admin(fd, dir, arg);
			if (ret < 0)
				saved = errno;
		}
		close(dir);
		errno = saved; /* untouched on success, as the kernel leaves it */
		return ret;
	}
	errno = saved; /* our lookups must not leak an errno into a passthrough */
	return real_ioctl()(fd, request, arg);
}
