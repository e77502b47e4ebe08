/*
 * tb-play /dev/snd/pcmCxDyp SECONDS
 *
 * A minimal ALSA playback client on the kernel's PCM ioctls (no libasound): plays SECONDS of
 * a quiet 1 kHz tone, interleaved S16_LE, 2 channels, 48000 Hz, then drains. A USB speaker
 * takes its data in isochronous OUT URBs at the pace of the USB frames, so the wall time of
 * play + drain says whether the data path kept the device's pace.
 *
 * Prints on stdout, one "KEY value" a line:
 *   FRAMES  frames written     WALL   seconds from START (after the first period) to the end of DRAIN
 *   RT      FRAMES / (48000 * WALL): near 1.00 when the device consumed in real time
 *   XRUNS   underruns (the writer was late; restarted each time)
 *   PERIOD  period size in frames   BUFFER  buffer size in frames
 * Exits 1 if the PCM cannot be set up or takes no data for 10 s.
 *
 * Exists because the busybox domU has no aplay/libasound. Built by tests/xen/build.sh.
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
	fprintf(stderr, "tb-play: %s: %s: %s\n", dev, what, errno ? strerror(errno) : "failed");
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

/* HW_PARAMS as tb-rec: S16_LE stereo 48 kHz, periods of 10-20 ms, a buffer of 100-500 ms. */
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
	unsigned long long frames = 0, total, xruns = 0, phase = 0;
	int fd, started = 0;
	double secs, t0 = 0, t, last_progress;
	int16_t *buf;

	if (argc != 3 || (secs = atof(argv[2])) <= 0 || secs > 3600) {
		fprintf(stderr, "usage: tb-play /dev/snd/pcmCxDyp SECONDS   (SECONDS up to 3600)\n");
		return 2;
	}
	dev = argv[1];
	fd = open(dev, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		die("open");
	period = setup(fd, &buffer);
	buf = malloc((size_t)period * CHANNELS * sizeof *buf);
	if (!buf)
		die("malloc");
	if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) != 0)
		die("PREPARE");
	total = (unsigned long long)(secs * RATE);
	last_progress = now();
	while (frames < total) {
		struct pollfd pfd = { fd, POLLOUT, 0 };
		struct snd_xferi x = { 0, buf, period };
		/* 1 kHz: 48 frames a cycle, a triangle at about -30 dBFS. */
		for (unsigned i = 0; i < period; i++, phase++) {
			int v = (int)(phase % 48);
			int16_t s = (int16_t)((v < 24 ? v : 48 - v) * 40 - 480);
			buf[2 * i] = buf[2 * i + 1] = s;
		}
		if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
			die("poll");
		if (ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x) != 0) {
			if (errno == EAGAIN) {
				if ((now() - last_progress) * 1000 > STALL_MS) {
					errno = 0;
					die("the device took no data for 10 s");
				}
				continue;
			}
			if (errno == EPIPE) {	/* underrun: count it and go on */
				xruns++;
				if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) != 0)
					die("prepare after underrun");
				started = 0;
				continue;
			}
			die("WRITEI_FRAMES");
		}
		last_progress = now();
		frames += (unsigned long long)x.result;
		/* Started explicitly: whether a write starts the PCM depends on sw_params this tool
		 * does not set. EBADFD: it was running already. */
		if (!started) {
			if (ioctl(fd, SNDRV_PCM_IOCTL_START) != 0 && errno != EBADFD)
				die("START");
			started = 1;
			if (t0 == 0)
				t0 = now();
		}
	}
	if (t0 == 0)
		t0 = now();
	/* DRAIN blocks until the device has played everything: make the fd blocking first. */
	if (fcntl(fd, F_SETFL, 0) != 0)
		die("fcntl");
	if (ioctl(fd, SNDRV_PCM_IOCTL_DRAIN) != 0)
		die("DRAIN");
	t = now() - t0;
	close(fd);
	printf("FRAMES %llu\nWALL %.3f\nRT %.3f\nXRUNS %llu\nPERIOD %u\nBUFFER %u\n",
	       frames, t, (double)frames / (RATE * t), xruns, period, buffer);
	return 0;
}
