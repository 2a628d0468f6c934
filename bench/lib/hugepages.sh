# Sourced by the compare scripts: references at their best. nacre's pool sits on huge
# pages, so fio's buffers go on huge pages too (--iomem=shmhuge): at 1 MiB O_DIRECT the
# page size alone moves fio by 2x here. As root this reserves huge pages for the run and
# restores the old reservation on exit; otherwise fio runs on normal pages and says so.
FIO_IOMEM=()
hugepages_reserve() { # pages
  local want=$1 path=/proc/sys/vm/nr_hugepages
  if [ "$(id -u)" != 0 ] || [ ! -w "$path" ]; then
    echo "note: not root: fio's buffers stay on normal pages (the reference is weaker)" >&2
    return
  fi
  HUGEPAGES_BEFORE=$(cat "$path")
  trap 'echo "$HUGEPAGES_BEFORE" > /proc/sys/vm/nr_hugepages' EXIT
  if [ "$HUGEPAGES_BEFORE" -lt "$want" ]; then echo "$want" > "$path"; fi
  if [ "$(cat "$path")" -ge "$want" ]; then
    FIO_IOMEM=(--iomem=shmhuge)
  else
    echo "note: could only reserve $(cat "$path") huge pages: fio on normal pages" >&2
  fi
}
