# Per-request phases of the vhci bridge, from its trace log (RUST_LOG pvusb_frontend::vhci=trace):
#   kernel   RET_SUBMIT written -> the next CMD_SUBMIT submitted (vhci, the driver, the reader)
#   usbif    CMD_SUBMIT submitted -> last usbif completion (ring, backend, device; all pieces)
#   answer   last usbif completion -> RET_SUBMIT written (hand-off to the writer, encode, write)
function t(s,   a) { split(substr(s, 12, 15), a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
function seq(   q) { match($0, /seqnum=[0-9]+/); return substr($0, RSTART + 7, RLENGTH - 7) }
/CMD_SUBMIT submitted/ { q = seq(); ts = t($1); sub_t[q] = ts
    if (last_ret) { k += ts - last_ret; nk++ } }
/usbif completion/ { q = seq(); if (q in sub_t) { done_t[q] = t($1); np++ } }
/RET_SUBMIT written/ { q = seq(); ts = t($1); last_ret = ts
    if (q in done_t) { u += done_t[q] - sub_t[q]; a += ts - done_t[q]; n++; delete sub_t[q]; delete done_t[q] } }
END { printf "requests %d (usbif URBs %d): kernel %.3f ms, usbif %.3f ms, answer %.3f ms per request\n",
      n, np, nk ? 1000 * k / nk : 0, n ? 1000 * u / n : 0, n ? 1000 * a / n : 0 }
