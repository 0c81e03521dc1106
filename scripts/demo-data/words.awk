# gen.awk -v task=cp|rev|rot -v n=N -v seed=S : JSONL {"inputs","targets"} over words of distinct letters
function word(len,   w, k, c, used) {
    w = ""; split("", used)
    for (k = 0; k < len; k++) {
        do { c = substr("abcdefghijklmnopqrstuvwxyz", int(rand() * 26) + 1, 1) } while (c in used)
        used[c] = 1; w = w c
    }
    return w
}
BEGIN {
    srand(seed)
    for (i = 0; i < n; i++) {
        if (task == "cp") {
            w = word(3 + int(rand() * 5))
            if (i % 2 == 0) printf "{\"inputs\": \"cp:%s\", \"targets\": \"%s\"}\n", w, w
            else { k = 2 + int(rand() * (length(w) - 1)); printf "{\"inputs\": \"pv:%s?%s\", \"targets\": \"%s\"}\n", w, substr(w, k, 1), substr(w, k - 1, 1) }
        } else {
            w = word(5); t = ""
            if (task == "rev") for (k = 5; k >= 1; k--) t = t substr(w, k, 1)
            else t = substr(w, 2) substr(w, 1, 1)
            printf "{\"inputs\": \"%s:%s\", \"targets\": \"%s\"}\n", task, w, t
        }
    }
}
