/*
 * tb-play /dev/snd/pcmCxDyp SECONDS
 *
 * A minimal ALSA playback client on the kernel's PCM ioctls (no libasound): plays SECONDS of
 * a quiet 1 kHz tone, interleaved S16_LE, 2 channels, 48000 Hz, then drains. A USB speaker
 * takes its data in isochronous OUT URBs at the pace of the USB frames, so the wall time of
 * play + drain says whether the data path kept the device's pace.
 *
 * Prints on stdout, one "KEY value" a line:
 *   FRAMES  frames written     WALL   seconds from the first write to the end of DRAIN
 *   RT      FRAMES / (48000 * WALL): near 1.00 when the device consumed in real time (a little
 *           above: the first half buffer is written before the PCM starts)
 *   XRUNS   underruns (the writer was late; restarted each time)
 *   PERIOD  period size in frames   BUFFER  buffer size in frames
 * Exits 1 if the PCM cannot be set up or takes no data for 10 s (with its state on stderr).
 *
 * Exists because the busybox domU has no aplay/libasound. Built by tests/xen/build.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <signal.h>
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

/* Start when half the buffer is queued, stop on underrun (as tinyalsa does). */
static void sw_setup(int fd, unsigned period, unsigned buffer)
{
	struct snd_pcm_sw_params sp;
	memset(&sp, 0, sizeof sp);
	sp.tstamp_mode = SNDRV_PCM_TSTAMP_NONE;
	sp.period_step = 1;
	sp.avail_min = period;
	sp.start_threshold = buffer / 2;
	sp.stop_threshold = buffer;
	sp.boundary = buffer;
	while (sp.boundary * 2 <= (snd_pcm_uframes_t)INT_MAX - buffer)
		sp.boundary *= 2;
	if (ioctl(fd, SNDRV_PCM_IOCTL_SW_PARAMS, &sp) != 0)
		die("SW_PARAMS");
}

/* The PCM's state and pointers, for the error messages. */
static void report(int fd, const char *when)
{
	struct snd_pcm_status st;
	memset(&st, 0, sizeof st);
	if (ioctl(fd, SNDRV_PCM_IOCTL_STATUS, &st) == 0)
		fprintf(stderr, "tb-play: %s: state %d appl_ptr %lu hw_ptr %lu avail %lu\n", when,
			(int)st.state, (unsigned long)st.appl_ptr, (unsigned long)st.hw_ptr,
			(unsigned long)st.avail);
}

static void on_alarm(int sig)
{
	(void)sig;
}

int main(int argc, char **argv)
{
	unsigned period, buffer;
	unsigned long long frames = 0, total, xruns = 0, phase = 0;
	int fd;
	double secs, t0, t;
	int16_t *buf;
	struct sigaction sa;

	if (argc != 3 || (secs = atof(argv[2])) <= 0 || secs > 3600) {
		fprintf(stderr, "usage: tb-play /dev/snd/pcmCxDyp SECONDS   (SECONDS up to 3600)\n");
		return 2;
	}
	dev = argv[1];
	/* A blocking write that the device never drains is cut by this alarm (EINTR). */
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sigaction(SIGALRM, &sa, NULL);
	fd = open(dev, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die("open");
	period = setup(fd, &buffer);
	sw_setup(fd, period, buffer);
	buf = malloc((size_t)period * CHANNELS * sizeof *buf);
	if (!buf)
		die("malloc");
	if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) != 0)
		die("PREPARE");
	total = (unsigned long long)(secs * RATE);
	t0 = now();
	while (frames < total) {
		struct snd_xferi x = { 0, buf, period };
		/* 1 kHz: 48 frames a cycle, a triangle at about -30 dBFS. */
		for (unsigned i = 0; i < period; i++, phase++) {
			int v = (int)(phase % 48);
			int16_t s = (int16_t)((v < 24 ? v : 48 - v) * 40 - 480);
			buf[2 * i] = buf[2 * i + 1] = s;
		}
		alarm(STALL_MS / 1000);
		if (ioctl(fd, SNDRV_PCM_IOCTL_WRITEI_FRAMES, &x) != 0) {
			int e = errno;
			alarm(0);
			if (e == EINTR) {
				report(fd, "stalled");
				errno = 0;
				die("the device took no data for 10 s");
			}
			if (e == EPIPE) {	/* underrun: count it and go on */
				xruns++;
				if (ioctl(fd, SNDRV_PCM_IOCTL_PREPARE) != 0)
					die("prepare after underrun");
				continue;
			}
			report(fd, "write failed");
			errno = e;
			die("WRITEI_FRAMES");
		}
		alarm(0);
		frames += (unsigned long long)x.result;
	}
	/* DRAIN blocks until the device has played everything. */
	alarm(STALL_MS / 1000);
	if (ioctl(fd, SNDRV_PCM_IOCTL_DRAIN) != 0) {
		int e = errno;
		report(fd, "drain failed");
		errno = e;
		die("DRAIN");
	}
	alarm(0);
	t = now() - t0;
	close(fd);
	printf("FRAMES %llu\nWALL %.3f\nRT %.3f\nXRUNS %llu\nPERIOD %u\nBUFFER %u\n",
	       frames, t, (double)frames / (RATE * t), xruns, period, buffer);
	return 0;
}
