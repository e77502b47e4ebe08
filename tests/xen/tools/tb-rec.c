/*
 * tb-rec /dev/snd/pcmCxDyc SECONDS
 *
 * A minimal ALSA capture client on the kernel's PCM ioctls (no libasound): records
 * interleaved S16_LE, 2 channels, 48000 Hz for SECONDS of wall time (CLOCK_MONOTONIC, from
 * just before SNDRV_PCM_IOCTL_START) and checks tb-mic's counter pattern: frame F carries
 * left = F & 0xffff, right = F >> 16, and consecutive frames must count up by one. A jump
 * forward is a gap (frames the device produced that nobody fetched in time); a step back or a
 * repeat is a pattern error.
 *
 * Prints on stdout, one "KEY value" a line:
 *   FRAMES    frames captured            WALL   seconds recorded
 *   RT        FRAMES / (48000 * WALL): the real-time fraction, 1.00 = kept real time
 *   GAPS      jumps in the counter       LOST   frames missing in those jumps
 *   BAD       frames that broke the pattern (0 unless data is corrupted or reordered)
 *   XRUNS     overruns (the reader was too slow; restarted each time)
 *   PERIOD    period size in frames      BUFFER buffer size in frames
 * Exits 1 if the PCM cannot be set up or no data arrives for 10 s; 3 if BAD > 0.
 *
 * Exists because neither the busybox domU nor the minimal dom0 has arecord/libasound; one
 * static binary records in both. Built by tests/xen/build.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <sound/asound.h>

#define RATE 48000
#define CHANNELS 2
#define STALL_MS 10000

static const char *dev;

static void die(const char *what)
{
	fprintf(stderr, "tb-rec: %s: %s: %s\n", dev, what, errno ? strerror(errno) : "failed");
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct snd_mask *mask(struct snd_pcm_hw_params *p, int k)
{
	return &p->masks[k - SNDRV_PCM_HW_PARAM_FIRST_MASK];
}

static struct snd_interval *interval(struct snd_pcm_hw_params *p, int k)
{
	return &p->intervals[k - SNDRV_PCM_HW_PARAM_FIRST_INTERVAL];
}

static void mask_only(struct snd_pcm_hw_params *p, int k, unsigned v)
{
	memset(mask(p, k), 0, sizeof(struct snd_mask));
	mask(p, k)->bits[v >> 5] = 1u << (v & 31);
}

static void range(struct snd_pcm_hw_params *p, int k, unsigned min, unsigned max)
{
	interval(p, k)->min = min;
	interval(p, k)->max = max;
}

/* HW_PARAMS: S16_LE stereo 48 kHz, periods of 10-20 ms, a buffer of 100-500 ms; the kernel
 * refines the rest and picks the values. Returns the period size in frames. */
static unsigned setup(int fd, unsigned *buffer)
{
	struct snd_pcm_hw_params p;
	int k;
	memset(&p, 0, sizeof p);
	for (k = SNDRV_PCM_HW_PARAM_FIRST_MASK; k <= SNDRV_PCM_HW_PARAM_LAST_MASK; k++)
		memset(mask(&p, k), 0xff, sizeof(struct snd_mask));
	for (k = SNDRV_PCM_HW_PARAM_FIRST_INTERVAL; k <= SNDRV_PCM_HW_PARAM_LAST_INTERVAL; k++)
		range(&p, k, 0, UINT_MAX);
	mask_only(&p, SNDRV_PCM_HW_PARAM_ACCESS, SNDRV_PCM_ACCESS_RW_INTERLEAVED);
	mask_only(&p, SNDRV_PCM_HW_PARAM_FORMAT, SNDRV_PCM_FORMAT_S16_LE);
	mask_only(&p, SNDRV_PCM_HW_PARAM_SUBFORMAT, SNDRV_PCM_SUBFORMAT_STD);
	range(&p, SNDRV_PCM_HW_PARAM_CHANNELS, CHANNELS, CHANNELS);
	range(&p, SNDRV_PCM_HW_PARAM_RATE, RATE, RATE);
	range(&p, SNDRV_PCM_HW_PARAM_PERIOD_TIME, 10000, 20000);
	range(&p, SNDRV_PCM_HW_PARAM_BUFFER_TIME, 100000, 500000);
	p.rmask = ~0u;
	p.info = ~0u;
	if (ioctl(fd, SNDRV_PCM_IOCTL_HW_PARAMS, &p) != 0)
		die("HW_PARAMS (S16_LE, 2 channels, 48000 Hz)");
	*buffer = interval(&p, SNDRV_PCM_HW_PARAM_BUFFER_SIZE)->min;
	return interval(&p, SNDRV_PCM_HW_PARAM_PERIOD_SIZE)->min;
}

int main(int argc, char **argv)
{
	unsigned period, buffer;
	unsigned long long frames = 0, gaps = 0, lost = 0, bad = 0, xruns = 0;
	int have_prev = 0, fd;
	uint32_t prev = 0;
	double secs, t0, t, last_data;
	int16_t *buf;

	if (argc != 3 || (secs = atof(argv[2])) <= 0 || secs > 3600) {
		fprintf(stderr, "usage: tb-rec /dev/snd/pcmCxDyc SECONDS   (SECONDS up to 3600)\n");
		return 2;
	}
	dev = argv[1];
	fd = open(dev, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		die("open");
	period = setup(fd, &buffer);
	buf = malloc((size_t)period * CHANNELS * sizeof *buf);
	if (!buf)
		die("malloc");
	if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) != 0)
		die("PREPARE");
	t0 = last_data = now();
	if (ioctl(fd, SNDRV_PCM_IOCTL_START) != 0)
		die("START");
	while ((t = now()) - t0 < secs) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		struct snd_xferi x = { 0, buf, period };
		int ms = (int)((secs - (t - t0)) * 1000) + 1;
		if (ms > 1000)
			ms = 1000;
		if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
			die("poll");
		if (ioctl(fd, SNDRV_PCM_IOCTL_READI_FRAMES, &x) != 0) {
			if (errno == EAGAIN) {
				if ((now() - last_data) * 1000 > STALL_MS) {
					errno = 0;
					die("no data for 10 s");
				}
				continue;
			}
			if (errno == EPIPE) {	/* overrun: count it and go on */
				xruns++;
				if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) != 0 ||
				    ioctl(fd, SNDRV_PCM_IOCTL_START) != 0)
					die("restart after overrun");
				continue;
			}
			die("READI_FRAMES");
		}
		last_data = now();
		for (long i = 0; i < (long)x.result; i++) {
			uint32_t c = (uint16_t)buf[2 * i] | (uint32_t)(uint16_t)buf[2 * i + 1] << 16;
			if (have_prev && c != prev + 1) {
				if (c > prev + 1) {
					gaps++;
					lost += c - prev - 1;
				} else {
					bad++;
				}
			}
			prev = c;
			have_prev = 1;
		}
		frames += (unsigned long long)x.result;
	}
	t = now() - t0;
	ioctl(fd, SNDRV_PCM_IOCTL_DROP);
	close(fd);
	printf("FRAMES %llu\nWALL %.3f\nRT %.3f\nGAPS %llu\nLOST %llu\nBAD %llu\nXRUNS %llu\n"
	       "PERIOD %u\nBUFFER %u\n",
	       frames, t, (double)frames / (RATE * t), gaps, lost, bad, xruns, period, buffer);
	return bad ? 3 : 0;
}
