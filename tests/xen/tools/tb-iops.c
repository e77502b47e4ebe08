/*
 * tb-iops [-p] DEVICE SECONDS [SPAN_MIB]
 *
 * 4 KiB random-read IOPS of a block device: O_DIRECT, queue depth 1 (one synchronous pread
 * at a time), offsets 4 KiB-aligned and uniformly drawn from the first SPAN_MIB MiB (default
 * 64) by a fixed-seed generator, so every run and every path reads the same offset sequence.
 * Runs for SECONDS of wall time (CLOCK_MONOTONIC), then prints "IOPS <reads per second>" on
 * stdout and the raw count on stderr.
 *
 * -p checks the test-bed stick's pattern in every 512-byte sector read ("PVUSB sector
 * NNNNNNNNNN", NNNNNNNNNN = the sector's number; see build.sh make_stick), so a path that
 * returns fast but wrong data fails instead of looking good.
 *
 * Exists because the busybox in dom0 and the domUs has no random-I/O tool. Built static by
 * tests/xen/build.sh so one binary runs in both. Exits 1 with one line on stderr on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096u
#define SECTOR 512u
#define SEED 0x7076757362656e63ull /* "pvusbenc": fixed, so the offset sequence is too */

static const char *dev;

static void die(const char *what)
{
	fprintf(stderr, "tb-iops: %s%s%s: %s\n", dev ? dev : "", dev ? ": " : "", what,
		errno ? strerror(errno) : "failed");
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: tb-iops [-p] DEVICE SECONDS [SPAN_MIB]   (SECONDS 1-3600, SPAN_MIB 1-65536)\n");
	exit(2);
}

/* Parse a decimal in [lo, hi] or exit with the usage line. */
static long parse(const char *s, long lo, long hi)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < lo || v > hi)
		usage();
	return v;
}

/* splitmix64: tiny, well mixed, and the same sequence everywhere for the same seed. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double now(void)
{
	struct timespec ts;
	errno = 0;
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		die("clock_gettime");
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t device_bytes(int fd)
{
	struct stat st;
	uint64_t size = 0;
	if (fstat(fd, &st) != 0)
		die("fstat");
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) != 0)
			die("ioctl BLKGETSIZE64");
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		errno = 0;
		die("not a block device or regular file");
	}
	return size;
}

/* Every sector of the block at OFFSET must start with its own "PVUSB sector %010u " line. */
static void check_pattern(const unsigned char *buf, uint64_t offset)
{
	for (unsigned i = 0; i < BLOCK / SECTOR; i++) {
		char want[32];
		uint64_t sector = offset / SECTOR + i;
		int n = snprintf(want, sizeof want, "PVUSB sector %010llu ", (unsigned long long)sector);
		if (n <= 0 || (size_t)n >= sizeof want || memcmp(buf + i * SECTOR, want, (size_t)n) != 0) {
			errno = 0;
			fprintf(stderr, "tb-iops: %s: sector %llu does not hold the stick pattern\n", dev,
				(unsigned long long)sector);
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	int verify = 0;
	if (argc > 1 && strcmp(argv[1], "-p") == 0) {
		verify = 1;
		argv++;
		argc--;
	}
	if (argc < 3 || argc > 4)
		usage();
	dev = argv[1];
	long seconds = parse(argv[2], 1, 3600);
	long span_mib = argc == 4 ? parse(argv[3], 1, 65536) : 64;
	uint64_t span = (uint64_t)span_mib << 20, blocks = span / BLOCK;

	int fd = open(dev, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (fd < 0)
		die("open O_DIRECT");
	uint64_t size = device_bytes(fd);
	if (size < span) {
		errno = 0;
		fprintf(stderr, "tb-iops: %s: %llu bytes, smaller than the %ld MiB span\n", dev,
			(unsigned long long)size, span_mib);
		return 1;
	}
	void *buf;
	int err = posix_memalign(&buf, BLOCK, BLOCK); /* O_DIRECT needs an aligned buffer */
	if (err != 0) {
		errno = err;
		die("posix_memalign");
	}

	uint64_t state = SEED, reads = 0;
	double start = now(), elapsed = 0;
	while (elapsed < (double)seconds) {
		uint64_t offset = (next_random(&state) % blocks) * BLOCK;
		ssize_t got;
		do
			got = pread(fd, buf, BLOCK, (off_t)offset);
		while (got < 0 && errno == EINTR);
		if (got < 0)
			die("pread");
		if ((size_t)got != BLOCK) {
			errno = 0;
			fprintf(stderr, "tb-iops: %s: short read of %zd bytes at %llu\n", dev, got,
				(unsigned long long)offset);
			return 1;
		}
		if (verify)
			check_pattern(buf, offset);
		reads++;
		elapsed = now() - start;
	}
	if (close(fd) != 0)
		die("close");
	free(buf);
	fprintf(stderr, "tb-iops: %llu random 4 KiB reads in %.3f s within %ld MiB%s\n",
		(unsigned long long)reads, elapsed, span_mib, verify ? ", pattern verified" : "");
	if (printf("IOPS %.1f\n", (double)reads / elapsed) < 0 || fflush(stdout) != 0)
		die("write stdout");
	return 0;
}
