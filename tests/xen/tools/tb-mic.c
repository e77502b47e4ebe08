/*
 * tb-mic [-p PORT] [-N]   (run as root in dom0, after `modprobe vhci-hcd`)
 *
 * -N: normal scheduling (default: SCHED_FIFO priority 10, see main). -s FD: serve an already
 * connected socket instead of attaching to vhci (for testing the protocol without vhci).
 *
 * A USB Audio Class 1 microphone emulated in userspace: the device side of USB/IP for one
 * full-speed device, attached to the local vhci-hcd without usbipd. To vhci-hcd it is a remote
 * USB/IP device; to dom0 (usbfs, libusb, snd-usb-audio) it is a real USB device on the vhci bus,
 * so `pvusb backend` can hand it to a domU like any other.
 *
 * Attach: socketpair(AF_UNIX, SOCK_STREAM) (vhci only checks SOCK_STREAM), then
 * "PORT FD DEVID SPEED" into /sys/devices/platform/vhci_hcd.0/attach with one end; the kernel
 * takes its own reference, we close that end and serve the other. PORT defaults to the first
 * free "hs" port of vhci_hcd.0/status. Runs until vhci closes the connection (detach) or
 * SIGTERM/SIGINT (then it detaches the port itself).
 *
 * The device (idVendor 1209 idProduct 0001, "tb-mic"): interface 0 AudioControl (input
 * terminal "microphone" -> output terminal "USB streaming"), interface 1 AudioStreaming with
 * alt 1 = one isochronous IN endpoint 0x81, 48 kHz, 2 channels, 16 bit, 192-byte packets, one
 * packet per 1 ms frame.
 *
 * Real time: the microphone has a 1 kHz frame clock (CLOCK_MONOTONIC from the start). An
 * iso IN URB of N packets is scheduled like URB_ISO_ASAP on a host controller: at the frame
 * after the previous URB's last frame if that is still in the future, else at the next frame
 * (the frames in between are lost, as a real microphone's samples are when nobody polls the
 * endpoint). Its answer is sent when its last frame has elapsed, never earlier. So a recorder
 * that keeps enough URBs queued receives exactly 48000 frames per second, a slower path
 * receives fewer, and the counter shows the lost frames.
 *
 * Data: frame number F of the stream (48 per ms since the start) is the 32-bit counter F:
 * left channel = F & 0xffff, right channel = F >> 16 (little endian). A recorder checks that
 * consecutive frames count up by one (tb-rec does).
 *
 * On SIGUSR1 and on exit it prints one line to stderr: "tb-mic: iso_urbs N packets N
 * lost_frames N unlinks N control N max_queue N late_max_us N late_over_1ms N" (counters since
 * the start, the last three since the previous report; max_queue: the most iso URBs the host
 * had queued at once; late_max_us, late_over_1ms: how late tb-mic
 * itself answered URBs after their last frame, the emulator's own scheduling delay, which a
 * hardware microphone does not have).
 * Built static by tests/xen/build.sh (like tb-ctrl and tb-iops).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define VHCI "/sys/devices/platform/vhci_hcd.0"
#define SPEED_FULL 2		/* enum usb_device_speed USB_SPEED_FULL */
#define RATE 48000
#define CHANNELS 2
#define FRAME_BYTES (CHANNELS * 2)
#define PER_MS (RATE / 1000)	/* audio frames per 1 ms USB frame */
#define PACKET (PER_MS * FRAME_BYTES)	/* 192 bytes */
#define MAX_PACKETS 1024	/* USBIP_MAX_ISO_PACKETS */
#define MAX_PENDING 256

/* USB/IP commands (Documentation/usb/usbip_protocol.rst); all header fields big-endian. */
#define CMD_SUBMIT 1
#define CMD_UNLINK 2
#define RET_SUBMIT 3
#define RET_UNLINK 4

struct hdr {			/* 48 bytes on the wire */
	uint32_t command, seqnum, devid, direction, ep;
	uint32_t u[5];		/* CMD_SUBMIT: flags, length, start_frame, packets, interval */
	uint8_t setup[8];
};

struct iso_desc {		/* 16 bytes on the wire, big-endian */
	uint32_t offset, length, actual, status;
};

struct pending {		/* an iso IN URB waiting for its frames */
	uint32_t seqnum, npk, buflen;
	int64_t frame;		/* first frame */
	struct iso_desc d[MAX_PACKETS];
};

static int sock = -1, port = -1;
static struct timespec t0;
static struct pending *pend[MAX_PENDING];
static int npend;
static int64_t next_frame = -1;	/* first free frame of the stream; -1: stream (re)starts */
static int alt;			/* interface 1's alternate setting */
static unsigned long long urbs, packets, lost, unlinks, ctrl, max_queue, late_max_us, late_1ms;
static volatile sig_atomic_t stop, report;

static void die(const char *what)
{
	fprintf(stderr, "tb-mic: %s: %s\n", what, errno ? strerror(errno) : "failed");
	exit(1);
}

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)(ts.tv_sec - t0.tv_sec) * 1000000 + (ts.tv_nsec - t0.tv_nsec) / 1000;
}

/* ---- descriptors ------------------------------------------------------------------------- */
static const uint8_t dev_desc[18] = {
	18, 1, 0x10, 0x01,	/* USB 1.1 */
	0, 0, 0, 64,		/* class per interface, ep0 64 bytes */
	0x09, 0x12, 0x01, 0x00,	/* 1209:0001 (pid.codes test id) */
	0x00, 0x01, 1, 2, 3, 1	/* bcdDevice 1.00, strings 1 2 3, 1 configuration */
};
static const uint8_t cfg_desc[] = {
	9, 2, 100, 0, 2, 1, 0, 0x80, 50,	/* configuration 1, 2 interfaces, 100 mA */
	9, 4, 0, 0, 0, 1, 1, 0, 0,	/* interface 0: AudioControl */
	9, 0x24, 1, 0x00, 0x01, 30, 0, 1, 1,	/* AC header UAC 1.0, 30 bytes, streaming if 1 */
	12, 0x24, 2, 1, 0x01, 0x02, 0, CHANNELS, 3, 0, 0, 0,	/* input terminal 1: microphone, L+R */
	9, 0x24, 3, 2, 0x01, 0x01, 0, 1, 0,	/* output terminal 2: USB streaming, source 1 */
	9, 4, 1, 0, 0, 1, 2, 0, 0,	/* interface 1 alt 0: AudioStreaming, no endpoint */
	9, 4, 1, 1, 1, 1, 2, 0, 0,	/* interface 1 alt 1: one endpoint */
	7, 0x24, 1, 2, 1, 1, 0,	/* AS general: terminal 2, delay 1, PCM */
	11, 0x24, 2, 1, CHANNELS, 2, 16, 1, 0x80, 0xbb, 0x00,	/* type I, 16 bit, 48000 Hz */
	9, 5, 0x81, 0x05, PACKET, 0, 1, 0, 0,	/* ep 0x81 iso async, 192 bytes, every frame */
	7, 0x25, 1, 0x01, 0, 0, 0,	/* CS endpoint: sampling frequency control */
};
static const char *const strings[] = { NULL, "pvusb test-bed", "tb-mic counter microphone", "0001" };

/* ---- wire helpers ---------------------------------------------------------------------------
 * Few system calls per URB (each one is expensive in a PV dom0 under TCG, and tb-mic shares
 * dom0's only vCPU with the path under test): reads are buffered (one recv() takes whatever vhci
 * has queued), and each answer goes out in one send(). */
static uint8_t rx[1 << 18];
static size_t rx_off, rx_len;

/* Fill the receive buffer with what is there, waiting for at least one byte. 0 on EOF/stop. */
static int rx_fill(void)
{
	for (;;) {
		if (rx_off == rx_len)
			rx_off = rx_len = 0;
		if (rx_off && rx_len == sizeof rx) {
			memmove(rx, rx + rx_off, rx_len - rx_off);
			rx_len -= rx_off, rx_off = 0;
		}
		ssize_t r = recv(sock, rx + rx_len, sizeof rx - rx_len, 0);
		if (r < 0 && errno == EINTR) {
			if (stop)
				return 0;	/* signalled: exiting anyway */
			continue;	/* SIGUSR1: reported at the next loop */
		}
		if (r == 0) {
			fprintf(stderr, "tb-mic: vhci closed the connection\n");
			stop = 2;
			return 0;
		}
		if (r < 0)
			die("recv");
		rx_len += (size_t)r;
		return 1;
	}
}

/* Take N bytes of the command stream (blocking until vhci has sent them). */
static void take(void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n && !stop) {
		if (rx_off == rx_len && !rx_fill())
			return;
		size_t k = rx_len - rx_off < n ? rx_len - rx_off : n;
		memcpy(p, rx + rx_off, k);
		rx_off += k, p += k, n -= k;
	}
}

static void put(const void *buf, size_t n)
{
	const uint8_t *p = buf;
	while (n) {
		ssize_t r = send(sock, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			die("send");
		p += r;
		n -= (size_t)r;
	}
}

static void send_ret(uint32_t cmd, uint32_t seqnum, int32_t status, uint32_t actual,
		     uint32_t start_frame, uint32_t npk, const void *data, size_t dlen,
		     const struct iso_desc *d)
{
	static uint8_t tx[sizeof(struct hdr) + MAX_PACKETS * (PACKET + sizeof(struct iso_desc)) + 256];
	struct hdr h = { 0 };
	size_t n = sizeof h;
	h.command = htonl(cmd);
	h.seqnum = htonl(seqnum);
	h.u[0] = htonl((uint32_t)status);
	h.u[1] = htonl(actual);
	h.u[2] = htonl(start_frame);
	h.u[3] = htonl(npk);
	memcpy(tx, &h, sizeof h);
	if (dlen)
		memcpy(tx + n, data, dlen), n += dlen;
	for (uint32_t i = 0; d && i < npk; i++) {
		struct iso_desc w = { htonl(d[i].offset), htonl(d[i].length), htonl(d[i].actual), 0 };
		memcpy(tx + n, &w, sizeof w), n += sizeof w;
	}
	put(tx, n);
}

/* ---- endpoint 0 ------------------------------------------------------------------------------ */
static void control(uint32_t seqnum, const uint8_t *s, const uint8_t *out)
{
	uint8_t buf[256];
	int len = -1;		/* -1: stall */
	unsigned type = s[0], req = s[1], val = s[2] | s[3] << 8, idx = s[4] | s[5] << 8;
	unsigned wlen = s[6] | s[7] << 8;
	(void)out;

	ctrl++;
	if ((type & 0x60) == 0) {	/* standard */
		switch (req) {
		case 0:	/* GET_STATUS */
			buf[0] = buf[1] = 0;
			len = 2;
			break;
		case 1:	/* CLEAR_FEATURE */
		case 3:	/* SET_FEATURE */
		case 9:	/* SET_CONFIGURATION */
			len = 0;
			break;
		case 6:	/* GET_DESCRIPTOR */
			if (val >> 8 == 1) {
				memcpy(buf, dev_desc, len = sizeof dev_desc);
			} else if (val >> 8 == 2) {
				memcpy(buf, cfg_desc, len = sizeof cfg_desc);
			} else if (val >> 8 == 3 && (val & 0xff) == 0) {
				buf[0] = 4, buf[1] = 3, buf[2] = 0x09, buf[3] = 0x04;	/* en-US */
				len = 4;
			} else if (val >> 8 == 3 && (val & 0xff) < 4) {
				const char *str = strings[val & 0xff];
				len = 2;
				for (; *str; str++)
					buf[len++] = (uint8_t)*str, buf[len++] = 0;
				buf[0] = (uint8_t)len, buf[1] = 3;
			}	/* others (device qualifier: a full-speed-only device) stall */
			break;
		case 8:	/* GET_CONFIGURATION */
			buf[0] = 1;
			len = 1;
			break;
		case 10:	/* GET_INTERFACE */
			buf[0] = idx == 1 ? (uint8_t)alt : 0;
			len = 1;
			break;
		case 11:	/* SET_INTERFACE */
			if (idx == 1) {
				alt = (int)val;
				next_frame = -1;	/* a new stream */
			}
			len = 0;
			break;
		}
	} else if ((type & 0x60) == 0x20 && (type & 0x1f) == 2) {	/* UAC1 endpoint request */
		if (type & 0x80) {	/* GET_CUR/MIN/MAX/RES of the sampling frequency */
			buf[0] = RATE & 0xff, buf[1] = (RATE >> 8) & 0xff, buf[2] = RATE >> 16;
			len = 3;
		} else {	/* SET_CUR: only 48000 exists */
			len = 0;
		}
	}
	if (len < 0) {
		send_ret(RET_SUBMIT, seqnum, -32 /* -EPIPE: stall */, 0, 0, 0, NULL, 0, NULL);
		return;
	}
	if (!(type & 0x80)) {	/* OUT: the data (if any) was consumed */
		send_ret(RET_SUBMIT, seqnum, 0, wlen, 0, 0, NULL, 0, NULL);
		return;
	}
	if ((unsigned)len > wlen)
		len = (int)wlen;
	send_ret(RET_SUBMIT, seqnum, 0, (uint32_t)len, 0, 0, buf, (size_t)len, NULL);
}

/* ---- the isochronous IN endpoint ------------------------------------------------------------- */
static void iso_complete(struct pending *p)
{
	static uint8_t data[MAX_PACKETS * PACKET];
	size_t n = 0;

	for (uint32_t i = 0; i < p->npk; i++) {
		uint32_t frames = p->d[i].length / FRAME_BYTES;
		if (frames > PER_MS)
			frames = PER_MS;
		uint64_t f0 = (uint64_t)(p->frame + i) * PER_MS;
		for (uint32_t k = 0; k < frames; k++) {
			uint32_t c = (uint32_t)(f0 + k);
			data[n++] = c & 0xff, data[n++] = (c >> 8) & 0xff;
			data[n++] = (c >> 16) & 0xff, data[n++] = c >> 24;
		}
		p->d[i].actual = frames * FRAME_BYTES;
	}
	urbs++;
	packets += p->npk;
	send_ret(RET_SUBMIT, p->seqnum, 0, (uint32_t)n, (uint32_t)p->frame & 0x3ff, p->npk, data, n,
		 p->d);
}

/* Queue an iso IN URB: schedule its frames (ASAP, see the top), answer it when they are over. */
static void iso_submit(uint32_t seqnum, uint32_t buflen, uint32_t npk, struct iso_desc *d)
{
	int64_t cur = now_us() / 1000 + 1;	/* the next frame */
	struct pending *p;

	if (npend == MAX_PENDING || npk == 0 || npk > MAX_PACKETS) {
		send_ret(RET_SUBMIT, seqnum, -22 /* -EINVAL */, 0, 0, npk <= MAX_PACKETS ? npk : 0,
			 NULL, 0, npk <= MAX_PACKETS ? d : NULL);
		return;
	}
	if (next_frame >= 0 && next_frame < cur)
		lost += (uint64_t)(cur - next_frame) * PER_MS;
	if (next_frame < cur)
		next_frame = cur;
	p = malloc(sizeof *p);
	if (!p)
		die("malloc");
	p->seqnum = seqnum, p->npk = npk, p->buflen = buflen, p->frame = next_frame;
	memcpy(p->d, d, npk * sizeof *d);
	next_frame += npk;
	pend[npend++] = p;	/* deadlines increase: the queue stays in order */
	if ((unsigned long long)npend > max_queue)
		max_queue = (unsigned long long)npend;
}

static void unlink_urb(uint32_t seqnum, uint32_t victim)
{
	int32_t status = 0;	/* 0: it had completed already */
	unlinks++;
	for (int i = 0; i < npend; i++) {
		if (pend[i]->seqnum != victim)
			continue;
		free(pend[i]);
		memmove(&pend[i], &pend[i + 1], (size_t)(npend - i - 1) * sizeof pend[0]);
		npend--;
		status = -104;	/* -ECONNRESET: unlinked */
		break;
	}
	send_ret(RET_UNLINK, seqnum, status, 0, 0, 0, NULL, 0, NULL);
}

/* Read one command from vhci and act on it. */
static void serve_one(void)
{
	static uint8_t out[65536];
	static struct iso_desc d[MAX_PACKETS];
	struct hdr h;
	uint32_t cmd, seq, dir, ep, len, npk;

	take(&h, sizeof h);
	if (stop)
		return;
	cmd = ntohl(h.command), seq = ntohl(h.seqnum), dir = ntohl(h.direction), ep = ntohl(h.ep);
	if (cmd == CMD_UNLINK) {
		unlink_urb(seq, ntohl(h.u[0]));
		return;
	}
	if (cmd != CMD_SUBMIT) {
		fprintf(stderr, "tb-mic: unknown command %u\n", cmd);
		exit(1);
	}
	len = ntohl(h.u[1]);
	npk = ntohl(h.u[3]);
	if (dir == 0 && len) {	/* OUT data follows the header */
		if (len > sizeof out) {
			fprintf(stderr, "tb-mic: OUT transfer of %u bytes\n", len);
			exit(1);
		}
		take(out, len);
	}
	if (ep == 1 && dir == 1) {	/* our iso IN endpoint: descriptors follow */
		if (npk > MAX_PACKETS) {
			fprintf(stderr, "tb-mic: %u iso packets\n", npk);
			exit(1);
		}
		for (uint32_t i = 0; i < npk; i++) {
			take(&d[i], sizeof d[i]);
			d[i].offset = ntohl(d[i].offset), d[i].length = ntohl(d[i].length);
			d[i].actual = d[i].status = 0;
		}
		iso_submit(seq, len, npk, d);
	} else if (ep == 0) {
		control(seq, h.setup, out);
	} else {
		send_ret(RET_SUBMIT, seq, -32, 0, 0, 0, NULL, 0, NULL);	/* no such endpoint */
	}
}

/* ---- attach to vhci-hcd ---------------------------------------------------------------------- */
static int free_port(void)
{
	char line[256], hub[8];
	int p, sta;
	FILE *f = fopen(VHCI "/status", "r");
	if (!f)
		die(VHCI "/status (modprobe vhci-hcd?)");
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "%7s %d %d", hub, &p, &sta) == 3 && !strcmp(hub, "hs") && sta == 4) {
			fclose(f);
			return p;
		}
	fclose(f);
	fprintf(stderr, "tb-mic: no free high-speed port on vhci_hcd.0\n");
	exit(1);
}

static void attach(void)
{
	int sv[2];
	FILE *f;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		die("socketpair");
	if (port < 0)
		port = free_port();
	f = fopen(VHCI "/attach", "w");
	if (!f)
		die(VHCI "/attach");
	fprintf(f, "%d %d %u %d", port, sv[1], 0x10001u, SPEED_FULL);
	if (fclose(f) != 0)
		die("writing " VHCI "/attach");
	close(sv[1]);		/* vhci holds its own reference */
	sock = sv[0];
	printf("tb-mic: attached to vhci_hcd.0 port %d (full speed)\n", port);
	fflush(stdout);
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		report = 1;
	else
		stop = 1;
}

static void print_counters(void)
{
	fprintf(stderr, "tb-mic: iso_urbs %llu packets %llu lost_frames %llu unlinks %llu control %llu"
		" max_queue %llu late_max_us %llu late_over_1ms %llu\n", urbs, packets, lost, unlinks,
		ctrl, max_queue, late_max_us, late_1ms);
	max_queue = late_max_us = late_1ms = 0;	/* these three: per report */
}

int main(int argc, char **argv)
{
	int opt, fifo = 1;
	while ((opt = getopt(argc, argv, "p:s:N")) != -1) {
		if (opt == 'p') {
			port = atoi(optarg);
		} else if (opt == 's') {	/* serve an already connected socket (testing) */
			sock = atoi(optarg);
		} else if (opt == 'N') {
			fifo = 0;
		} else {
			fprintf(stderr, "usage: tb-mic [-p VHCI-PORT] [-N] [-s FD]\n");
			return 2;
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	struct sigaction sa = { .sa_handler = on_signal };
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	/* A hardware microphone's clock does not wait for dom0's CPU: run as a real-time task so
	 * the path under test (backend, vhci threads) delays tb-mic as little as possible. */
	struct sched_param sp = { .sched_priority = 10 };
	if (fifo && sched_setscheduler(0, SCHED_FIFO, &sp) != 0)
		fprintf(stderr, "tb-mic: SCHED_FIFO: %s (normal priority)\n", strerror(errno));
	if (sock < 0)
		attach();

	while (!stop) {
		if (report) {
			report = 0;
			print_counters();
		}
		struct pollfd pfd = { sock, POLLIN, 0 };
		struct timespec ts, *tsp = NULL;
		if (npend) {
			int64_t due = (pend[0]->frame + pend[0]->npk) * 1000 - now_us();
			if (due < 0)
				due = 0;
			ts.tv_sec = due / 1000000, ts.tv_nsec = (due % 1000000) * 1000;
			tsp = &ts;
		}
		if (rx_off < rx_len) {	/* commands already buffered: no waiting */
			serve_one();
		} else {
			if (ppoll(&pfd, 1, tsp, NULL) < 0 && errno != EINTR)
				die("ppoll");
			if (pfd.revents & (POLLIN | POLLHUP | POLLERR))
				serve_one();
		}
		/* answer every URB whose last frame has elapsed */
		while (!stop && npend && (pend[0]->frame + pend[0]->npk) * 1000 <= now_us()) {
			struct pending *p = pend[0];
			int64_t late = now_us() - (p->frame + p->npk) * 1000;
			if ((unsigned long long)late > late_max_us)
				late_max_us = (unsigned long long)late;
			late_1ms += late > 1000;
			memmove(&pend[0], &pend[1], (size_t)(npend - 1) * sizeof pend[0]);
			npend--;
			iso_complete(p);
			free(p);
		}
	}
	if (stop == 1) {	/* signalled: detach (vhci then closes its end) */
		FILE *f = fopen(VHCI "/detach", "w");
		if (f) {
			fprintf(f, "%d", port);
			fclose(f);
		}
	}
	print_counters();
	return 0;
}
