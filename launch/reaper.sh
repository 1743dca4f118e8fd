# The reaper (launch/reaper.py says why and how it is used): run as `sh reaper.sh` with the
# parent's pipe on stdin. Lines: "+PGID" a node's process group started, "-PGID" it ended,
# "uPREFIX" shared-memory segments /dev/shm/PREFIX* to unlink afterwards. Anything else is
# ignored. When the pipe closes (the parent exited, however it died) every group still known
# gets SIGKILL, then the segments are unlinked. A POSIX shell starts in about a millisecond and
# holds about a megabyte: there is one reaper per launcher, agent and Ray actor.

trap '' INT TERM HUP PIPE  # only the closing pipe ends the reaper

groups=' '   # " 12 345 ": each known group once, between spaces
prefixes=''

while IFS= read -r line; do
    value=${line#?}
    case $line in
    +*)
        case $value in
        '' | *[!0-9]* | 0* | 1) ;;                     # not a group this reaper may kill (-01 is -1)
        *) case $groups in *" $value "*) ;; *) groups="$groups$value " ;; esac ;;
        esac
        ;;
    -*)
        case $value in
        '' | *[!0-9]*) ;;
        *) case $groups in *" $value "*) groups="${groups%% "$value" *} ${groups#* "$value" }" ;; esac ;;
        esac
        ;;
    u*)
        case $value in
        '' | *[!A-Za-z0-9._-]*) ;;                     # only a segment prefix: no path, no pattern
        *) prefixes="$prefixes $value" ;;
        esac
        ;;
    esac
done

for group in $groups; do
    kill -s KILL -- "-$group" 2>/dev/null  # already gone: nothing to do
done

for prefix in $prefixes; do
    set --
    for segment in /dev/shm/"$prefix"*; do
        [ -e "$segment" ] && set -- "$@" "$segment"
    done
    [ $# -gt 0 ] && rm -f -- "$@"
done
exit 0
