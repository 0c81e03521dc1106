// world.c — the synthetic mixed-task world (see world.h): word tables, the
// constructed languages, one generator per cluster, the base corpus and the
// files of a world.
#include "eval/world.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/err.h"
#include "base/file.h"
#include "train/train.h"

const char *const rm_world_template = "Instruction: {inputs}\nResponse: ";

// ---------------------------------------------------------------- word tables

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *const NAMES[] = {"Anna",  "Boris",  "Clara", "Dmitri", "Elsa",  "Felix", "Greta", "Hugo",
                                    "Ida",   "Jonas",  "Karla", "Leon",   "Mira",  "Nils",  "Olga",  "Pavel",
                                    "Rosa",  "Sven",   "Tilda", "Viktor", "Wanda", "Yusuf", "Zora",  "Emil",
                                    "Frida", "Gustav", "Hanna", "Ivan",   "Jana",  "Kurt",  "Lena",  "Marek",
                                    "Nora",  "Oskar",  "Petra", "Ruben",  "Sara",  "Tomas", "Ulla",  "Vera"};
static const char *const TOWNS[] = {"Bellmoor",  "Cinderfall", "Dunmore",   "Eastwick",  "Foxhollow", "Greyhaven",
                                    "Highmarsh", "Ironbridge", "Juniper",   "Kettleby",  "Larkspur",  "Millbrook",
                                    "Northwold", "Oakridge",   "Pinecrest", "Queensbay", "Redcliff",  "Stonehill",
                                    "Thornbury", "Umberdale",  "Valewood",  "Westmere",  "Yarrow",    "Zennor"};
static const char *const JOBS[] = {"baker",  "sailor", "farmer", "teacher", "doctor", "painter", "miner",   "weaver",
                                   "fisher", "potter", "singer", "tailor",  "guard",  "cook",    "builder", "merchant"};
static const char *const OBJECTS[] = {"lamp",   "boat",   "key",   "clock",  "book",    "ring",   "map",     "coat",
                                      "basket", "bell",   "hat",   "cup",    "kettle",  "ladder", "mirror",  "rope",
                                      "sword",  "violin", "wagon", "candle", "blanket", "bucket", "compass", "lantern"};
static const char *const ANIMALS[] = {"dog",  "cat", "horse", "goat",  "owl",  "fox",  "rabbit", "sheep",
                                      "duck", "pig", "cow",   "mouse", "bear", "wolf", "swan",   "frog"};
static const char *const FOODS[] = {"bread", "apples", "cheese",  "fish", "soup", "pears", "honey", "rice",
                                    "beans", "plums",  "carrots", "eggs", "cake", "nuts",  "milk",  "grapes"};
static const char *const COLORS[] = {"red",   "blue",  "green", "yellow", "black",
                                     "white", "brown", "grey",  "golden", "purple"};
static const char *const DAYS[] = {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"};
static const char *const NUMWORDS[] = {
    "zero",     "one",      "two",    "three",      "four",       "five",         "six",        "seven",   "eight",
    "nine",     "ten",      "eleven", "twelve",     "thirteen",   "fourteen",     "fifteen",    "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty", "twenty-one", "twenty-two", "twenty-three", "twenty-four"};
// events: past tense, base form, past participle
static const char *const VERBS[][3] = {{"found", "find", "found"},      {"sold", "sell", "sold"},
                                       {"bought", "buy", "bought"},     {"painted", "paint", "painted"},
                                       {"lost", "lose", "lost"},        {"fixed", "fix", "fixed"},
                                       {"carried", "carry", "carried"}, {"hid", "hide", "hidden"},
                                       {"washed", "wash", "washed"},    {"borrowed", "borrow", "borrowed"}};
static const char *const POS_ADJ[] = {"wonderful", "excellent", "lovely",   "superb", "delightful", "charming",
                                      "brilliant", "pleasant",  "splendid", "great",  "perfect",    "fine"};
static const char *const NEG_ADJ[] = {"awful",    "dreadful", "terrible", "boring", "poor",  "dull",
                                      "horrible", "nasty",    "bad",      "weak",   "dirty", "rude"};
static const char *const ACTIVITIES[] = {"sing", "swim", "cook", "paint", "read", "ride", "dance", "fish"};
static const char *const FEASTS[] = {"fair", "feast", "race", "wedding", "market", "concert", "parade", "dance"};

// ---------------------------------------------------------------- helpers

static int rnd(uint64_t *rng, int n) { return (int)(rm_rng_next(rng) % (uint64_t)n); }
#define PICK(rng, a) ((a)[rnd(rng, COUNT(a))])

// k distinct indices of [0, n) into idx.
static void distinct(uint64_t *rng, int n, int k, int *idx) {
    for (int i = 0; i < k; i++) {
        int again;
        do {
            idx[i] = rnd(rng, n);
            again = 0;
            for (int j = 0; j < i; j++) again |= idx[j] == idx[i];
        } while (again);
    }
}

// Appends fmt with {1}..{9} replaced by a[0..8] ({u1}: a[0] with a capital first letter).
static void fill(rm_sb *sb, const char *fmt, const char *const *a) {
    for (const char *p = fmt; *p; p++) {
        int cap = p[0] == '{' && p[1] == 'u';
        const char *d = p + 1 + cap;
        if (p[0] == '{' && *d >= '1' && *d <= '9' && d[1] == '}') {
            const char *s = a[*d - '1'];
            if (cap && *s) {
                char c = (char)toupper((unsigned char)*s);
                rm_sb_putn(sb, &c, 1);
                s++;
            }
            rm_sb_puts(sb, s);
            p = d + 1;
        } else {
            rm_sb_putn(sb, p, 1);
        }
    }
}

// fill with up to nine strings given inline
#define FILL(sb, fmt, ...) fill((sb), (fmt), (const char *const[9]){__VA_ARGS__})

// "a, b and c"
static void join_and(rm_sb *sb, const char *const *w, int n) {
    for (int i = 0; i < n; i++) {
        rm_sb_puts(sb, i == 0 ? "" : i == n - 1 ? " and " : ", ");
        rm_sb_puts(sb, w[i]);
    }
}

// ---------------------------------------------------------------- constructed languages

// The constructed languages translate this lexicon (the nouns, adjectives and
// verbs of their sentences).
static const char *const LEX_NOUNS[] = {"dog",  "cat",  "fox",  "owl", "horse", "goat", "bear",  "frog",
                                        "boat", "lamp", "bell", "cup", "bread", "fish", "apple", "river"};
static const char *const LEX_ADJS[] = {"red", "blue", "green", "black", "white", "big", "small", "old"};
static const char *const LEX_VERBS[] = {"sees", "likes", "finds", "has", "wants", "follows"};
#define N_LEX (COUNT(LEX_NOUNS) + COUNT(LEX_ADJS) + COUNT(LEX_VERBS))

enum { LANG_VELARI, LANG_DORUN, N_LANG };
static const char *const LANG_NAME[N_LANG] = {"Velari", "Dorun"};

struct rm_world {
    uint64_t seed;
    char lex[N_LANG][N_LEX][16]; // word i of the lexicon in each language
};

// A word of 2-3 syllables: Velari open syllables (ka-mi-ro), Dorun two
// syllables ending in a consonant (dor-gak, bu-tem).
static void make_word(uint64_t *rng, int lang, char *w) {
    static const char *const CV[] = {"b", "d", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z"};
    static const char *const VW[] = {"a", "e", "i", "o", "u"};
    int syl = lang == LANG_VELARI ? 2 + rnd(rng, 2) : 2;
    w[0] = 0;
    for (int s = 0; s < syl; s++) {
        strcat(w, PICK(rng, CV));
        strcat(w, PICK(rng, VW));
        if (lang == LANG_DORUN && (s == syl - 1 || rnd(rng, 3) == 0)) strcat(w, PICK(rng, CV));
    }
}

static int lex_taken(const rm_world *w, const char *word) {
    for (int l = 0; l < N_LANG; l++)
        for (int i = 0; i < N_LEX; i++)
            if (!strcmp(w->lex[l][i], word)) return 1;
    return 0;
}

int rm_world_new(rm_world **out, uint64_t seed) {
    rm_world *w = calloc(1, sizeof *w);
    if (!w) return rm_errorf(RM_ENOMEM, "world: out of memory");
    w->seed = seed;
    uint64_t rng = seed ^ 0x6c6578696b6f6eull;
    for (int l = 0; l < N_LANG; l++)
        for (int i = 0; i < N_LEX; i++) {
            char word[16];
            do make_word(&rng, l, word);
            while (lex_taken(w, word));
            strcpy(w->lex[l][i], word);
        }
    *out = w;
    return RM_OK;
}

void rm_world_free(rm_world *w) { free(w); }

// A sentence of the lexicon: [adj] noun verb noun2 (slots are lexicon indices).
typedef struct lex_sentence {
    int adj, noun, verb, noun2;
} lex_sentence;

static lex_sentence lex_draw(uint64_t *rng) {
    lex_sentence s;
    int nn[2];
    distinct(rng, COUNT(LEX_NOUNS), 2, nn);
    s.noun = nn[0];
    s.noun2 = nn[1];
    s.adj = rnd(rng, COUNT(LEX_ADJS) + 3) - 3; // negative: no adjective
    s.verb = rnd(rng, COUNT(LEX_VERBS));
    return s;
}

static const char *lex_word(const rm_world *w, int lang, int kind, int i) {
    int base = kind == 0 ? 0 : kind == 1 ? COUNT(LEX_NOUNS) : COUNT(LEX_NOUNS) + COUNT(LEX_ADJS);
    return w->lex[lang][base + i];
}

// English: "the [adj] noun verb the noun2"
static void lex_english(const lex_sentence *s, rm_sb *sb) {
    rm_sb_puts(sb, "the ");
    if (s->adj >= 0) {
        rm_sb_puts(sb, LEX_ADJS[s->adj]);
        rm_sb_puts(sb, " ");
    }
    FILL(sb, "{1} {2} the {3}", LEX_NOUNS[s->noun], LEX_VERBS[s->verb], LEX_NOUNS[s->noun2]);
}

// Velari: "noun [adj] verb noun2" (no articles, adjective after its noun);
// Dorun: "[adj] noun noun2 verb" (verb last).
static void lex_foreign(const rm_world *w, int lang, const lex_sentence *s, rm_sb *sb) {
    const char *n1 = lex_word(w, lang, 0, s->noun), *n2 = lex_word(w, lang, 0, s->noun2);
    const char *v = lex_word(w, lang, 2, s->verb), *a = s->adj >= 0 ? lex_word(w, lang, 1, s->adj) : NULL;
    if (lang == LANG_VELARI) {
        if (a) FILL(sb, "{1} {2} {3} {4}", n1, a, v, n2);
        else FILL(sb, "{1} {2} {3}", n1, v, n2);
    } else {
        if (a) FILL(sb, "{1} {2} {3} {4}", a, n1, n2, v);
        else FILL(sb, "{1} {2} {3}", n1, n2, v);
    }
}

// ---------------------------------------------------------------- task generators
//
// Each generator writes one request (in) and its answer (out) for one surface
// of its cluster. Phrasings: {1} is the body (review, passage, ...), the
// others are named per cluster.

typedef void (*gen_fn)(const rm_world *w, int surface, uint64_t *rng, rm_sb *in, rm_sb *out);

// --- sentiment: positive / negative reviews of four kinds of things

static const char *const SENT_NOUNS[4][6] = {{"acting", "plot", "music", "ending", "story", "camera work"},
                                             {"soup", "bread", "service", "dessert", "waiter", "wine"},
                                             {"room", "bed", "staff", "breakfast", "view", "pool"},
                                             {"battery", "screen", "speaker", "case", "charger", "buttons"}};
static const char *const SENT_FILLER[4][3] = {
    {"We saw it on {2}.", "It played in {3} for a week.", "I went with {4}."},
    {"We ate there on {2}.", "It is near the square in {3}.", "I went with {4}."},
    {"We stayed two nights in {3}.", "We arrived on {2}.", "I travelled with {4}."},
    {"I bought it in {3}.", "It came on {2}.", "{4} gave it to me."}};
static const char *const SENT_ASK[4][5] = {{"Film review: {1} Is this review positive or negative?",
                                            "What does the critic think of the film? {1} Answer positive or negative.",
                                            "{1} Was this film review positive or negative?",
                                            "Here is what a viewer wrote about a movie: {1} Positive or negative?",
                                            "Decide if this movie review is positive or negative. {1}"},
                                           {"Restaurant review: {1} Is this review positive or negative?",
                                            "Did the diner enjoy the meal? {1} Answer positive or negative.",
                                            "{1} Is the sentiment of this restaurant review positive or negative?",
                                            "A guest wrote about a restaurant: {1} Positive or negative?",
                                            "Tell whether this review of a restaurant is positive or negative. {1}"},
                                           {"Hotel review: {1} Is this review positive or negative?",
                                            "How did the guest feel about the hotel? {1} Answer positive or negative.",
                                            "{1} Would you call this hotel review positive or negative?",
                                            "A traveller wrote this about a hotel: {1} Positive or negative?",
                                            "Classify the hotel review as positive or negative. {1}"},
                                           {"Product review: {1} Is this review positive or negative?",
                                            "Was the buyer happy with the gadget? {1} Answer positive or negative.",
                                            "{1} Is this review of a device positive or negative?",
                                            "A customer wrote about a gadget: {1} Positive or negative?",
                                            "Rate the sentiment of this product review, positive or negative. {1}"}};

static void sentiment_review(int d, int pos, uint64_t *rng, rm_sb *sb) {
    int nn[2], k = 1 + rnd(rng, 2), filler = rnd(rng, 4);
    distinct(rng, 6, 2, nn);
    char f[160];
    rm_sb tmp = {0};
    if (filler < 3) {
        FILL(&tmp, SENT_FILLER[d][filler], "", PICK(rng, DAYS), PICK(rng, TOWNS), PICK(rng, NAMES));
        snprintf(f, sizeof f, "%s ", tmp.buf ? tmp.buf : "");
        rm_sb_free(&tmp);
        if (rnd(rng, 2)) rm_sb_puts(sb, f);
    } else {
        f[0] = 0;
    }
    for (int i = 0; i < k; i++) {
        const char *adj = pos ? PICK(rng, POS_ADJ) : PICK(rng, NEG_ADJ);
        FILL(sb, i ? " The {1} was {2}." : "The {1} was {2}.", SENT_NOUNS[d][nn[i]], adj);
    }
    if (f[0] && !strstr(sb->buf, f)) {
        rm_sb_puts(sb, " ");
        rm_sb_putn(sb, f, strlen(f) - 1);
    }
}

static void gen_sentiment(const rm_world *w, int d, uint64_t *rng, rm_sb *in, rm_sb *out) {
    int pos = rnd(rng, 2);
    rm_sb body = {0};
    sentiment_review(d, pos, rng, &body);
    FILL(in, PICK(rng, SENT_ASK[d]), body.buf);
    rm_sb_free(&body);
    rm_sb_puts(out, pos ? "positive" : "negative");
}

// --- topic: sports / music / weather / trade, in four kinds of text

static const char *const TOPIC_LABEL[4] = {"sports", "music", "weather", "trade"};
static const char *const TOPIC_EVENT[4][4] = {
    {"{1} won the race in {2}", "the team from {2} lost the match", "{1} scored two goals for {2}",
     "the coach in {2} praised the players"},
    {"{1} sang a new song in {2}", "the choir of {2} gave a concert", "{1} played the flute all night",
     "a band from {2} played loud drums"},
    {"a storm hit {2}", "heavy rain fell on {2}", "{1} saw snow on the hills near {2}", "strong winds blew over {2}"},
    {"the price of {3} rose in {2}", "{1} sold goods at the market of {2}",
     "merchants brought ships full of {3} to {2}", "{1} paid ten coins for {3}"}};
static const char *const TOPIC_FRAME[4] = {"Headline: {1}.", "Hear ye, people of {3}! {u1}!",
                                           "Dear {2}, I must tell you that {1}. Yours, {4}.", "Dear diary, today {1}."};
static const char *const TOPIC_ASK[4][5] = {
    {"{1} What is the topic of this headline: sports, music, weather or trade?",
     "Which topic does this headline belong to, sports, music, weather or trade? {1}",
     "Read the headline and name its topic (sports, music, weather, trade). {1}",
     "{1} Is this headline about sports, music, weather or trade?",
     "Topic of the headline below? Choose sports, music, weather or trade. {1}"},
    {"The town crier called out: {1} What was the news about: sports, music, weather or trade?",
     "{1} This announcement is about which topic, sports, music, weather or trade?",
     "What topic did the crier announce? {1} Options: sports, music, weather, trade.",
     "Name the topic of the announcement (sports, music, weather or trade). {1}",
     "An announcement in the square: {1} Sports, music, weather or trade?"},
    {"{1} What is this letter about: sports, music, weather or trade?",
     "Read the letter and give its topic, sports, music, weather or trade. {1}",
     "Which topic is the letter about? Choose sports, music, weather or trade. {1}",
     "Letter: {1} Topic (sports, music, weather, trade)?",
     "A friend wrote: {1} Is the letter about sports, music, weather or trade?"},
    {"{1} What is this diary entry about: sports, music, weather or trade?",
     "Give the topic of the diary entry, sports, music, weather or trade. {1}",
     "Diary: {1} Which topic: sports, music, weather or trade?",
     "Someone wrote in a diary: {1} Is it about sports, music, weather or trade?",
     "Classify the topic of this diary page as sports, music, weather or trade. {1}"}};

static void gen_topic(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    int t = rnd(rng, 4), nm[3];
    distinct(rng, COUNT(NAMES), 3, nm);
    const char *town = PICK(rng, TOWNS);
    rm_sb ev = {0}, body = {0};
    FILL(&ev, PICK(rng, TOPIC_EVENT[t]), NAMES[nm[0]], town, PICK(rng, FOODS));
    FILL(&body, TOPIC_FRAME[s], ev.buf, NAMES[nm[1]], town, NAMES[nm[2]]);
    FILL(in, PICK(rng, TOPIC_ASK[s]), body.buf);
    rm_sb_puts(out, TOPIC_LABEL[t]);
    rm_sb_free(&ev);
    rm_sb_free(&body);
}

// --- entailment: does a one-sentence premise entail a hypothesis? yes / no

static const char *const ENT_ASK[4][5] = {
    {"Premise: {1} Hypothesis: {2} Does the premise entail the hypothesis? Answer yes or no.",
     "{1} Based on this, is it true that {2} Yes or no?", "Read: {1} Question: is it right that {2} Answer yes or no.",
     "Given the fact \"{1}\", does it follow that \"{2}\"? yes or no",
     "Fact: {1} Claim: {2} Does the fact support the claim, yes or no?"},
    {"About a pet: {1} Does it follow that {2} Answer yes or no.", "{1} Can we conclude that {2} yes or no?",
     "Premise: {1} Hypothesis: {2} Entailed, yes or no?", "Statement: {1} Is this then true: {2} Say yes or no.",
     "If {1} then is it true that {2} yes or no?"},
    {"Travel note: {1} Does that mean {2} Answer yes or no.", "{1} Given this, is it true that {2} yes or no?",
     "Premise: {1} Hypothesis: {2} Does the hypothesis follow, yes or no?",
     "Read the note: {1} Question: {2} yes or no?", "We know that {1} Must it be that {2} Answer yes or no."},
    {"Market record: {1} Does it follow that {2} Answer yes or no.", "{1} From this, can we say that {2} yes or no?",
     "Premise: {1} Hypothesis: {2} Is the hypothesis entailed? yes or no", "Receipt: {1} Claim: {2} True, yes or no?",
     "Knowing that {1} is it true that {2} Answer yes or no."}};

// A fact p and two claims about one of its attributes, one that follows from
// it and one it contradicts (the base model's text; the tasks use entail_pair).
static void entail_parts(int s, uint64_t *rng, rm_sb *p, rm_sb *yes, rm_sb *no) {
    static const char *const PREMISE[4] = {"{1} is a {2} who lives in {4}.", "{1} has a {6} {5}.",
                                           "{1} travelled to {4} on {7}.", "{1} bought {8} at the market in {4}."};
    // per surface, the two attributes a hypothesis may be about
    static const char *const HYP[4][2] = {{"{1} is a {3}.", "{1} lives in {4}."},
                                          {"{1} has a {5}.", "the {5} of {1} is {6}."},
                                          {"{1} went to {4}.", "{1} travelled on {7}."},
                                          {"{1} bought {8}.", "{1} was in {4}."}};
    int jb[2], tw[2], an[2], co[2], dy[2], fd[2], which = rnd(rng, 2);
    distinct(rng, COUNT(JOBS), 2, jb);
    distinct(rng, COUNT(TOWNS), 2, tw);
    distinct(rng, COUNT(ANIMALS), 2, an);
    distinct(rng, COUNT(COLORS), 2, co);
    distinct(rng, COUNT(DAYS), 2, dy);
    distinct(rng, COUNT(FOODS), 2, fd);
    const char *name = PICK(rng, NAMES), *num = NUMWORDS[2 + rnd(rng, 8)];
    FILL(p, PREMISE[s], name, JOBS[jb[0]], "", TOWNS[tw[0]], ANIMALS[an[0]], COLORS[co[0]], DAYS[dy[0]], FOODS[fd[0]],
         num);
    for (int v = 0; v < 2; v++) {
        // v = 1: the attribute asked about takes its other value (the pet keeps its kind when its colour is asked)
        int pet = s == 1 && which == 1 ? an[0] : an[v];
        FILL(v ? no : yes, HYP[s][which], name, "", JOBS[jb[v]], TOWNS[tw[v]], ANIMALS[pet], COLORS[co[v]], DAYS[dy[v]],
             FOODS[fd[v]], num);
    }
}

// A request's premise and hypothesis state one fact of the surface s (a
// person's town, a pet, a trip, a purchase), each affirmed or denied (pos,
// hpos): the premise entails the hypothesis when both say it the same way,
// and contradicts it otherwise. The person and the town, animal or food the
// hypothesis names are the premise's, so the judgement rests on what each of
// them says of the fact, never on which things they name.
static void entail_pair(int s, int pos, int hpos, uint64_t *rng, rm_sb *p, rm_sb *h) {
    static const char *const PREMISE[4][2] = {
        {"{1} is a {2} who does not live in {3}.", "{1} is a {2} who lives in {3}."},
        {"{1} does not have a {4}.", "{1} has a {5} {4}."},
        {"{1} did not travel to {3} on {6}.", "{1} travelled to {3} on {6}."},
        {"{1} bought no {7} at the market in {3}.", "{1} bought {7} at the market in {3}."}};
    static const char *const HYP[4][2] = {{"{1} does not live in {3}.", "{1} lives in {3}."},
                                          {"{1} does not have a {4}.", "{1} has a {4}."},
                                          {"{1} did not go to {3}.", "{1} went to {3}."},
                                          {"{1} did not buy {7}.", "{1} bought {7}."}};
    const char *a[7];
    a[0] = PICK(rng, NAMES), a[1] = PICK(rng, JOBS), a[2] = PICK(rng, TOWNS), a[3] = PICK(rng, ANIMALS);
    a[4] = PICK(rng, COLORS), a[5] = PICK(rng, DAYS), a[6] = PICK(rng, FOODS);
    fill(p, PREMISE[s][pos], a);
    fill(h, HYP[s][hpos], a);
}

static void gen_entail(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    int pos = rnd(rng, 2), hpos = rnd(rng, 2);
    rm_sb p = {0}, h = {0};
    entail_pair(s, pos, hpos, rng, &p, &h);
    FILL(in, PICK(rng, ENT_ASK[s]), p.buf, h.buf);
    rm_sb_puts(out, pos == hpos ? "yes" : "no");
    rm_sb_free(&p);
    rm_sb_free(&h);
}

// --- paraphrase: do two sentences mean the same? same / different

static const char *const PARA_ASK[4][5] = {
    {"Sentence one: {1} Sentence two: {2} Do they mean the same? Answer same or different.",
     "Do these two say the same thing, same or different? {1} / {2}",
     "Compare: \"{1}\" and \"{2}\". Same or different meaning?",
     "{1} {2} Are these two sentences the same in meaning or different?",
     "Is \"{2}\" a paraphrase of \"{1}\"? Answer same or different."},
    {"First: {1} Second: {2} Same meaning or different?",
     "Tell if these mean the same or something different: {1} | {2}", "\"{1}\" versus \"{2}\": same or different?",
     "{1} Now compare it with: {2} Answer same or different.",
     "Do the sentences agree? {1} {2} Say same or different."},
    {"A: {1} B: {2} Do A and B mean the same? same or different", "{1} and {2} Same or different meaning?",
     "Check whether these two sentences are paraphrases, same or different: {1} {2}",
     "Is {2} the same as saying {1} Answer same or different.", "Sentence pair: {1} || {2} Same or different?"},
    {"One: {1} Two: {2} Do they describe the same lesson? Answer same or different.",
     "Same or different: \"{1}\" and \"{2}\"?", "{1} Does this mean the same as \"{2}\"? same or different",
     "Here are two sentences. {1} {2} Same meaning or different?", "Decide same or different for the pair: {1} / {2}"}};

// A sentence s1, a paraphrase of it (same) and the paraphrase with one
// person, thing, town or activity changed (different), in the surface s (the
// base model's text and the rewrite cluster).
// form: which of the two other wordings (-1: at random).
static void para_parts_form(int s, int form, uint64_t *rng, rm_sb *s1, rm_sb *same, rm_sb *diff) {
    int nm[3], ob[2], tw[2], ac[2], change = rnd(rng, 2);
    if (form < 0) form = rnd(rng, 2);
    distinct(rng, COUNT(NAMES), 3, nm);
    distinct(rng, COUNT(OBJECTS), 2, ob);
    distinct(rng, COUNT(TOWNS), 2, tw);
    distinct(rng, COUNT(ACTIVITIES), 2, ac);
    const char *A = NAMES[nm[0]], *B = NAMES[nm[1]], *o = OBJECTS[ob[0]], *o2 = OBJECTS[ob[1]];
    static const char *const FIRST[4] = {"{1} gave the {2} to {3}.", "{1} met {3} in {4}.", "{1} sold a {2} to {3}.",
                                         "{1} taught {3} to {5}."};
    static const char *const OTHER[4][2] = {{"The {2} was given to {3} by {1}.", "{3} got the {2} from {1}."},
                                            {"In {4}, {1} met {3}.", "{3} was met by {1} in {4}."},
                                            {"{3} bought a {2} from {1}.", "A {2} was sold to {3} by {1}."},
                                            {"{3} learned to {5} from {1}.", "{3} was taught to {5} by {1}."}};
    const char *f = OTHER[s][form];
    FILL(s1, FIRST[s], A, o, B, TOWNS[tw[0]], ACTIVITIES[ac[0]]);
    FILL(same, f, A, o, B, TOWNS[tw[0]], ACTIVITIES[ac[0]]);
    if (change) FILL(diff, f, A, o, NAMES[nm[2]], TOWNS[tw[0]], ACTIVITIES[ac[0]]); // another person
    else if (s == 1) FILL(diff, f, A, o, B, TOWNS[tw[1]], ACTIVITIES[ac[0]]);       // another town
    else FILL(diff, f, A, o2, B, TOWNS[tw[0]], ACTIVITIES[ac[1]]);                  // another thing
}

static void para_parts(int s, uint64_t *rng, rm_sb *s1, rm_sb *same, rm_sb *diff) {
    para_parts_form(s, -1, rng, s1, same, diff);
}

// Two sentences about one exchange between two people (a gift, a greeting,
// a sale, a lesson), each told from one of its sides with a pair of converse
// verbs ("A sold a lamp to B" / "A bought a lamp from B"); the second names
// the two people the other way round, so it means the same as the first
// exactly when it uses the other verb.
static void gen_paraphrase(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    static const char *const SIDE[4][2] = {{"{1} gave the {3} to {2}.", "{1} got the {3} from {2}."},
                                           {"{1} greeted {2} in {4}.", "{1} was greeted by {2} in {4}."},
                                           {"{1} sold a {3} to {2}.", "{1} bought a {3} from {2}."},
                                           {"{1} taught {2} to {5}.", "{1} learned to {5} from {2}."}};
    int nm[2], v1 = rnd(rng, 2), v2 = rnd(rng, 2);
    distinct(rng, COUNT(NAMES), 2, nm);
    const char *o = PICK(rng, OBJECTS), *t = PICK(rng, TOWNS), *act = PICK(rng, ACTIVITIES);
    rm_sb s1 = {0}, s2 = {0};
    FILL(&s1, SIDE[s][v1], NAMES[nm[0]], NAMES[nm[1]], o, t, act);
    FILL(&s2, SIDE[s][v2], NAMES[nm[1]], NAMES[nm[0]], o, t, act);
    FILL(in, PICK(rng, PARA_ASK[s]), s1.buf, s2.buf);
    rm_sb_puts(out, v1 != v2 ? "same" : "different");
    rm_sb_free(&s1);
    rm_sb_free(&s2);
}

// --- passages of events (who / where / when questions)

typedef struct event {
    int name, verb, obj, town, day;
} event;

// n events (1..3) with distinct people, objects, towns and days, written in
// style s (0 story, 1 news report, 2 fact sheet, 3 letter); with one event,
// a sentence or two about nobody in particular around it. Returns n.
static int passage(int s, int n, uint64_t *rng, event *ev, rm_sb *sb) {
    static const char *const SCENE[8] = {"It was cold that morning.", "The market was busy.",
                                         "Nobody expected it.",       "The wind was strong that day.",
                                         "It had rained all night.",  "Everyone was surprised.",
                                         "The streets were quiet.",   "Later the sun came out."};
    int nm[3], ob[3], tw[3], dy[3];
    distinct(rng, COUNT(NAMES), 3, nm);
    distinct(rng, COUNT(OBJECTS), 3, ob);
    distinct(rng, COUNT(TOWNS), 3, tw);
    distinct(rng, COUNT(DAYS), 3, dy);
    for (int i = 0; i < n; i++) ev[i] = (event){nm[i], rnd(rng, COUNT(VERBS)), ob[i], tw[i], dy[i]};
    if (s == 3) rm_sb_puts(sb, rnd(rng, 2) ? "Dear friend, " : "Dear cousin, ");
    if (s == 1) rm_sb_puts(sb, "News of the week. ");
    if (n == 1 && s < 2 && rnd(rng, 2)) {
        rm_sb_puts(sb, PICK(rng, SCENE));
        rm_sb_puts(sb, " ");
    }
    for (int i = 0; i < n; i++) {
        const char *N = NAMES[ev[i].name], *V = VERBS[ev[i].verb][0], *O = OBJECTS[ev[i].obj], *T = TOWNS[ev[i].town],
                   *D = DAYS[ev[i].day];
        static const char *const STORY[3] = {"On {5}, {1} {2} a {3} in {4}.", "{1} {2} a {3} in {4} on {5}.",
                                             "In {4}, {1} {2} a {3} on {5}."};
        static const char *const NEWS[3] = {"Reports say {1} {2} a {3} in {4} on {5}.", "On {5} in {4}, {1} {2} a {3}.",
                                            "Witnesses saw {1}, who {2} a {3} in {4} on {5}."};
        static const char *const SHEET[1] = {"Person: {1}; deed: {2} a {3}; where: in {4}; when: on {5}."};
        static const char *const LETTER[3] = {"you will not believe it: {1} {2} a {3} in {4} on {5}.",
                                              "Also, on {5} {1} {2} a {3} in {4}.", "And {1} {2} a {3} in {4} on {5}."};
        rm_sb_puts(sb, i ? " " : "");
        const char *f = s == 0   ? PICK(rng, STORY)
                        : s == 1 ? PICK(rng, NEWS)
                        : s == 2 ? SHEET[0]
                                 : LETTER[i ? 1 + rnd(rng, 2) : 0];
        FILL(sb, f, N, V, O, T, D);
    }
    if (n == 1 && s != 2 && rnd(rng, 2)) {
        rm_sb_puts(sb, " ");
        rm_sb_puts(sb, PICK(rng, SCENE));
    }
    if (s == 3) rm_sb_puts(sb, rnd(rng, 2) ? " Take care." : " See you soon.");
    return n;
}

static const char *const STYLE_NAME[4] = {"story", "report", "record", "letter"};

// who: the person; where: "in" and the town; what: "a" and the thing (short
// answers as a passage says them).
static void gen_extract(int kind, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    static const char *const ASK[3][6] = {
        {"{1} Who {2} the {3}?", "Read the {6}. {1} Question: who {2} the {3}?", "{1} Name the person who {2} the {3}.",
         "Which person {2} the {3}? {1}", "According to this {6}, who {2} the {3}? {1}",
         "{1} The {3} was {5} by whom?"},
        {"{1} Where did {4} {2} the {3}?", "Read the {6}. {1} Question: in which town did {4} {2} the {3}?",
         "{1} Name the town where {4} {2} the {3}.", "Where did {4} {2} the {3}? {1}",
         "According to this {6}, where did {4} {2} the {3}? {1}", "{1} In what place did {4} {2} the {3}?"},
        {"{1} What did {4} {2}?", "Read the {6}. {1} Question: which thing did {4} {2}?",
         "{1} Name the thing that {4} {7}.", "What did {4} {2}? {1}", "According to this {6}, what did {4} {2}? {1}",
         "{1} Which object did {4} {2}?"}};
    event ev[3];
    rm_sb body = {0};
    passage(s, 1, rng, ev, &body); // one person, one town, one thing: the answer is the one of its kind
    const event *e = &ev[0];
    // who: past tense; where / what: base form
    const char *verb = kind == 0 ? VERBS[e->verb][0] : VERBS[e->verb][1];
    FILL(in, PICK(rng, ASK[kind]), body.buf, verb, OBJECTS[e->obj], NAMES[e->name], VERBS[e->verb][2], STYLE_NAME[s],
         VERBS[e->verb][0]);
    if (kind == 0) rm_sb_puts(out, NAMES[e->name]);
    else FILL(out, kind == 1 ? "in {1}" : "a {1}", kind == 1 ? TOWNS[e->town] : OBJECTS[e->obj]);
    rm_sb_free(&body);
}

static void gen_who(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) { gen_extract(0, s, rng, in, out); }
static void gen_where(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    gen_extract(1, s, rng, in, out);
}
static void gen_what(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    gen_extract(2, s, rng, in, out);
}

// --- arithmetic: a sum of two numbers, answered in digits

static void gen_arith(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    static const char *const ASK[4][5] = {
        {"{5} asks: what is {1} plus {2}?", "Add {1} and {2} for {5}.", "Compute {1} + {2}, please, says {5}.",
         "{1} plus {2} makes how much? {5} wants to know.", "Help {5} find the sum of {1} and {2}."},
        {"{5} asks: what is {3} plus {4}? Answer in digits.",
         "Add {3} and {4} for {5} and write the result as a number.",
         "How much is {3} and {4} together, in digits? asks {5}.", "Give {5} the sum of {3} and {4} in digits.",
         "{u3} plus {u4}: what number is that, {5}?"},
        {"{5} had {1} {6} and got {2} more. How many {6} does {5} have now?",
         "There are {1} {6} in a box and {5} adds {2}. How many {6} are in the box?",
         "{5} picked {1} {6} in the morning and {2} in the evening. How many {6} in all?",
         "A basket holds {1} {6}. {5} puts in {2} more. How many {6} now?",
         "{5} ate {1} {6} on Monday and {2} on Tuesday. How many {6} did {5} eat?"},
        {"A {5} costs {1} coins and a {6} costs {2} coins. How much for both?",
         "{u5}: {1} coins. {u6}: {2} coins. What is the total?",
         "You buy a {5} for {1} coins and a {6} for {2} coins. How many coins do you pay?",
         "The bill lists a {5} at {1} coins and a {6} at {2} coins. What is the sum?",
         "How many coins for a {5} ({1}) and a {6} ({2})?"}};
    int a = 1 + rnd(rng, 12), b = 1 + rnd(rng, 12), ob[2];
    char da[8], db[8];
    snprintf(da, sizeof da, "%d", a);
    snprintf(db, sizeof db, "%d", b);
    distinct(rng, COUNT(OBJECTS), 2, ob);
    const char *p5 = s == 3 ? OBJECTS[ob[0]] : PICK(rng, NAMES), *p6 = s == 3 ? OBJECTS[ob[1]] : PICK(rng, FOODS);
    FILL(in, PICK(rng, ASK[s]), da, db, NUMWORDS[a], NUMWORDS[b], p5, p6);
    rm_sb_printf(out, "%d", a + b);
}

// --- counting: how many, answered in words

static void gen_count(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    static const char *const ASK[4][5] = {
        {"How many animals are in this list: {1}?", "Count the animals: {1}.", "{1}. How many animals is that?",
         "Here is a list of animals: {1}. How many are there?", "Tell me how many animals you see: {1}"},
        {"How many times does the word {2} appear here: {1}?", "Count how often {2} occurs in: {1}",
         "{1}. How many times is {2} written?", "In the words \"{1}\", how many are {2}?",
         "Number of times {2} shows up in: {1}?"},
        {"How many people are named in this sentence? {1}", "{1} How many people are mentioned?",
         "Count the people in: {1}", "Read: {1} How many persons does it name?",
         "How many names are there in \"{1}\"?"},
        {"{1} How many things are in the basket?", "Count the things in the basket. {1}",
         "{1} Tell me the number of things in the basket.", "Read this: {1} How many items does the basket hold?",
         "How many objects are in the basket? {1}"}};
    int c = 2 + rnd(rng, 5), idx[8];
    rm_sb body = {0};
    const char *words[8];
    const char *target_word = "";
    switch (s) {
    case 0:
        distinct(rng, COUNT(ANIMALS), c, idx);
        for (int i = 0; i < c; i++) words[i] = ANIMALS[idx[i]];
        for (int i = 0; i < c; i++) FILL(&body, i ? ", {1}" : "{1}", words[i]);
        break;
    case 1: {
        // the thing's word c times among one to three animals, each named once
        target_word = PICK(rng, OBJECTS);
        int k = 1 + rnd(rng, 3), n = c + k, placed = 0, shown = 0;
        distinct(rng, COUNT(ANIMALS), k, idx);
        for (int i = 0; i < n; i++) {
            int left = n - i, need = c - placed;
            int put = need > 0 && (need >= left || rnd(rng, left) < need);
            placed += put;
            FILL(&body, i ? ", {1}" : "{1}", put ? target_word : ANIMALS[idx[shown++]]);
        }
        break;
    }
    case 2:
        distinct(rng, COUNT(NAMES), c, idx);
        for (int i = 0; i < c; i++) words[i] = NAMES[idx[i]];
        join_and(&body, words, c);
        FILL(&body, " went to {1} on {2}.", PICK(rng, TOWNS), PICK(rng, DAYS));
        break;
    default:
        distinct(rng, COUNT(OBJECTS), c, idx);
        FILL(&body, "In the basket of {1} there are ", PICK(rng, NAMES));
        for (int i = 0; i < c; i++) {
            rm_sb_puts(&body, i == 0 ? "a " : i == c - 1 ? " and a " : ", a ");
            rm_sb_puts(&body, OBJECTS[idx[i]]);
        }
        rm_sb_puts(&body, ".");
        break;
    }
    FILL(in, PICK(rng, ASK[s]), body.buf, target_word);
    rm_sb_puts(out, NUMWORDS[c]);
    rm_sb_free(&body);
}

// Everything the world has names for: things, animals, foods (lists, spellings).
static const char *const THINGS[] = {"lamp",   "boat",   "key",     "clock",  "book",    "ring",   "map",     "coat",
                                     "basket", "bell",   "hat",     "cup",    "kettle",  "ladder", "mirror",  "rope",
                                     "sword",  "violin", "wagon",   "candle", "blanket", "bucket", "compass", "lantern",
                                     "dog",    "cat",    "horse",   "goat",   "owl",     "fox",    "rabbit",  "sheep",
                                     "duck",   "pig",    "cow",     "mouse",  "bear",    "wolf",   "swan",    "frog",
                                     "bread",  "apples", "cheese",  "fish",   "soup",    "pears",  "honey",   "rice",
                                     "beans",  "plums",  "carrots", "eggs",   "cake",    "nuts",   "milk",    "grapes"};

// The dashed spelling of w ("l-a-m-p").
static void put_spelled(rm_sb *sb, const char *w) {
    for (const char *p = w; *p; p++) {
        if (p != w) rm_sb_puts(sb, "-");
        rm_sb_putn(sb, p, 1);
    }
}

// --- rewrite: a sentence said the other way round (giving, meeting, selling,
// teaching: the paraphrase of para_parts)

static void gen_rewrite(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    static const char *const ASK[4][5] = {
        {"Rewrite in the passive voice: {1}", "Say it the other way round: {1}",
         "{1} Put this sentence in the passive.", "Turn this around so that it starts with the thing given: {1}",
         "Passive form of \"{1}\"?"},
        {"Start with the town: {1}", "{1} Rewrite it starting with the town.", "Rewrite with the town in front: {1}",
         "Put the place first: {1}", "Begin this sentence with where it happened: {1}"},
        {"Tell it from the buyer's side: {1}", "{1} Rewrite it as a purchase.", "Say what the buyer did: {1}",
         "Rewrite so that the buyer comes first: {1}", "From the other side, please: {1}"},
        {"Tell it from the learner's side: {1}", "{1} Rewrite it with the learner first.",
         "Say what the pupil did: {1}", "Rewrite so that it starts with who learned: {1}",
         "The same lesson, from the other side: {1}"}};
    rm_sb s1 = {0}, same = {0}, diff = {0};
    para_parts_form(s, 0, rng, &s1, &same, &diff);
    FILL(in, PICK(rng, ASK[s]), s1.buf);
    rm_sb_puts(out, same.buf);
    rm_sb_free(&s1);
    rm_sb_free(&same);
    rm_sb_free(&diff);
}

// --- translation: Velari / Dorun <-> English

static void gen_translate(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    static const char *const ASK[2][5] = {
        {"Translate from {2} to English: {1}", "What does \"{1}\" mean in English? It is {2}.",
         "{2}: {1} English:", "Give the English for the {2} sentence {1}", "Say this {2} sentence in English: {1}"},
        {"Translate from English to {2}: {1}", "How do you say \"{1}\" in {2}?",
         "English: {1} {2}:", "Give the {2} for the English sentence {1}", "Say this in {2}: {1}"}};
    int lang = s % 2, to_english = s < 2;
    lex_sentence ls = lex_draw(rng);
    rm_sb en = {0}, fo = {0};
    lex_english(&ls, &en);
    lex_foreign(w, lang, &ls, &fo);
    FILL(in, PICK(rng, ASK[!to_english]), to_english ? fo.buf : en.buf, LANG_NAME[lang]);
    rm_sb_puts(out, to_english ? en.buf : fo.buf);
    rm_sb_free(&en);
    rm_sb_free(&fo);
}

// --- summary-like generation: a title, or the people / places of a passage

static void gen_summary(const rm_world *w, int s, uint64_t *rng, rm_sb *in, rm_sb *out) {
    static const char *const ASK[4][5] = {
        {"Give this story a title. {1}", "{1} What would be a good title for this story?",
         "Write a short title for the story: {1}", "Story: {1} Title:", "Suggest a title for the following story. {1}"},
        {"Write a headline for this report. {1}", "{1} Give the report a short headline.",
         "Headline for the news below? {1}", "Report: {1} Headline:", "Sum up this report in a headline. {1}"},
        {"List the people named in this text. {1}", "{1} Who are the people mentioned?",
         "Name everyone who appears here: {1}", "Text: {1} People:", "Which persons does this passage mention? {1}"},
        {"List the places named in this text. {1}", "{1} Which towns are mentioned?",
         "Name every town that appears here: {1}", "Text: {1} Places:", "Which places does this passage mention? {1}"}};
    rm_sb body = {0};
    if (s == 0) {
        const char *N = PICK(rng, NAMES), *O = PICK(rng, OBJECTS), *T = PICK(rng, TOWNS), *C = PICK(rng, COLORS);
        static const char *const STORY[3] = {
            ("{1} found an old {2} {3} in {4}. {1} cleaned the {3} and kept it. Soon everyone in {4} talked about "
             "the {3}."),
            "One day {1} saw a {2} {3} by the road near {4}. {1} took the {3} home. The {3} brought luck to {1}.",
            "In {4} lived {1}, who made a {2} {3}. People came to see the {3}. {1} was proud of the {3}."};
        FILL(&body, PICK(rng, STORY), N, C, O, T);
        FILL(out, "{1} and the {2}", N, O);
    } else if (s == 1) {
        const char *T = PICK(rng, TOWNS), *F = PICK(rng, FEASTS), *J = PICK(rng, JOBS), *D = PICK(rng, DAYS);
        static const char *const NEWS[3] = {
            "On {4} the people of {1} held a {2}. Many {3}s came, and the {2} lasted until night.",
            "{1} had a busy {4}: a {2} filled the square, and even the {3}s stopped work to join the {2}.",
            "A {2} took place in {1} on {4}. The {3}s of {1} said it was the best {2} in years."};
        FILL(&body, PICK(rng, NEWS), T, F, J, D);
        FILL(out, "{1} holds a {2}", T, F);
    } else {
        int n = 2 + rnd(rng, 2), nm[3], tw[3], ob[3];
        distinct(rng, COUNT(NAMES), 3, nm);
        distinct(rng, COUNT(TOWNS), 3, tw);
        distinct(rng, COUNT(OBJECTS), 3, ob);
        for (int i = 0; i < n; i++) {
            static const char *const SENT[3] = {"{1} went to {2} with a {3}.", "In {2}, {1} sold a {3}.",
                                                "{1} lived in {2} and had a {3}."};
            FILL(&body, i ? " " : "", "");
            FILL(&body, SENT[rnd(rng, 3)], NAMES[nm[i]], TOWNS[tw[i]], OBJECTS[ob[i]]);
        }
        const char *ws[3];
        for (int i = 0; i < n; i++) ws[i] = s == 2 ? NAMES[nm[i]] : TOWNS[tw[i]];
        join_and(out, ws, n);
    }
    FILL(in, PICK(rng, ASK[s]), body.buf);
    rm_sb_free(&body);
}

// ---------------------------------------------------------------- the catalogue

typedef struct task_def {
    rm_world_task t;
    gen_fn gen;
    int surface;
    int small; // part of the small world
} task_def;

#define T4(cl, metric, fn, n0, n1, n2, n3, s0, s1, s2, s3)                                                             \
    {{n0, cl, metric}, fn, 0, s0}, {{n1, cl, metric}, fn, 1, s1}, {{n2, cl, metric}, fn, 2, s2}, {                     \
        {n3, cl, metric}, fn, 3, s3                                                                                    \
    }

static const task_def TASKS[] = {
    T4("sentiment", "em", gen_sentiment, "sentiment_film", "sentiment_restaurant", "sentiment_hotel",
       "sentiment_gadget", 1, 1, 1, 0),
    T4("who", "em", gen_who, "who_story", "who_report", "who_record", "who_letter", 0, 0, 0, 0),
    T4("arithmetic", "em", gen_arith, "sum_digits", "sum_words", "sum_story", "sum_bill", 0, 0, 0, 0),
    T4("rewrite", "em", gen_rewrite, "rewrite_giving", "rewrite_meeting", "rewrite_selling", "rewrite_teaching", 1, 1,
       1, 0),
    T4("topic", "em", gen_topic, "topic_headline", "topic_crier", "topic_letter", "topic_diary", 1, 1, 1, 0),
    T4("entailment", "em", gen_entail, "entail_people", "entail_pets", "entail_trips", "entail_market", 0, 0, 0, 0),
    T4("paraphrase", "em", gen_paraphrase, "para_giving", "para_meeting", "para_selling", "para_teaching", 0, 0, 0, 0),
    T4("where", "em", gen_where, "where_story", "where_report", "where_record", "where_letter", 0, 0, 0, 0),
    T4("what", "em", gen_what, "what_story", "what_report", "what_record", "what_letter", 0, 0, 0, 0),
    T4("counting", "em", gen_count, "count_animals", "count_word", "count_people", "count_basket", 1, 1, 1, 0),
    T4("translation", "bleu", gen_translate, "velari_en", "dorun_en", "en_velari", "en_dorun", 0, 0, 0, 0),
    T4("summary", "rouge", gen_summary, "title_story", "headline_report", "people_list", "places_list", 0, 0, 0, 0),
};
#define N_TASKS COUNT(TASKS)

static const rm_world_task *task_list(rm_world_size size, int *n) {
    static rm_world_task full[N_TASKS], small[N_TASKS];
    static int n_small = -1;
    if (n_small < 0) {
        int k = 0;
        for (int i = 0; i < N_TASKS; i++) {
            full[i] = TASKS[i].t;
            if (TASKS[i].small) small[k++] = TASKS[i].t;
        }
        n_small = k;
    }
    *n = size == RM_WORLD_FULL ? N_TASKS : n_small;
    return size == RM_WORLD_FULL ? full : small;
}

int rm_world_tasks(rm_world_size size, const rm_world_task **tasks) {
    int n;
    *tasks = task_list(size, &n);
    return n;
}

int rm_world_size_parse(const char *s, rm_world_size *out) {
    if (!strcmp(s, "small")) *out = RM_WORLD_SMALL;
    else if (!strcmp(s, "full")) *out = RM_WORLD_FULL;
    else return rm_errorf(RM_EINVAL, "world size '%s': small or full", s);
    return RM_OK;
}

const char *rm_world_size_name(rm_world_size s) { return s == RM_WORLD_FULL ? "full" : "small"; }

rm_world_plan rm_world_plan_for(rm_world_size size) {
    // the base model reads its text about once: a model that sees the same
    // passages many times learns them by heart instead of learning to read them
    if (size == RM_WORLD_FULL)
        return (rm_world_plan){.n_train = 1500,
                               .n_valid = 40,
                               .n_test = 25,
                               .n_samples = 20,
                               .corpus_bytes = 15000000,
                               .copying_bytes = 4000000};
    return (rm_world_plan){.n_train = 1000,
                           .n_valid = 30,
                           .n_test = 25,
                           .n_samples = 20,
                           .corpus_bytes = 4500000,
                           .copying_bytes = 2000000};
}

int rm_world_example(const rm_world *w, const char *task, uint64_t *rng, rm_sb *in, rm_sb *out) {
    for (int i = 0; i < N_TASKS; i++)
        if (!strcmp(TASKS[i].t.name, task)) {
            TASKS[i].gen(w, TASKS[i].surface, rng, in, out);
            return in->oom || out->oom ? rm_errorf(RM_ENOMEM, "world: out of memory") : RM_OK;
        }
    return rm_errorf(RM_ENOTFOUND, "world: no task '%s'", task);
}

// ---------------------------------------------------------------- the base corpus
//
// What the base model reads: the world's facts in prose (people, pets, trips,
// purchases, events, reviews, news, feasts), the constructed languages'
// lexicons and glossed sentences, sums and counts, spelled words. Never an
// instruction with its answer: the tasks' formats are left to the adapters.

// People with their jobs, towns and pets, then some of it said again.
static void doc_people(uint64_t *rng, rm_sb *sb) {
    int n = 2 + rnd(rng, 2), nm[3], jb[3], tw[3], co[3], an[3];
    distinct(rng, COUNT(NAMES), n, nm);
    distinct(rng, COUNT(JOBS), n, jb);
    distinct(rng, COUNT(TOWNS), n, tw);
    distinct(rng, COUNT(COLORS), n, co);
    distinct(rng, COUNT(ANIMALS), n, an);
    static const char *const F[3] = {"{1} is a {2} who lives in {3}.", "{1} works as a {2} in {3} and has a {4} {5}.",
                                     "In {3} lives {1}, a {2}, with a {4} {5}."};
    static const char *const AGAIN[8] = {
        " The {2} lives in {3}.",  " {1} is a {2}.",  " {1} lives in {3}.",      " The {2} is {1}.",
        " The {5} of {1} is {4}.", " {1} has a {5}.", " The one in {3} is {1}.", " The {4} {5} belongs to {1}."};
    for (int i = 0; i < n; i++) {
        FILL(sb, i ? " " : "", "");
        FILL(sb, PICK(rng, F), NAMES[nm[i]], JOBS[jb[i]], TOWNS[tw[i]], COLORS[co[i]], ANIMALS[an[i]]);
    }
    for (int k = 1 + rnd(rng, 3); k > 0; k--) {
        int i = rnd(rng, n);
        FILL(sb, PICK(rng, AGAIN), NAMES[nm[i]], JOBS[jb[i]], TOWNS[tw[i]], COLORS[co[i]], ANIMALS[an[i]]);
    }
}

static void doc_deeds(uint64_t *rng, rm_sb *sb) {
    int n = 2 + rnd(rng, 3);
    for (int i = 0; i < n; i++) {
        int nm[2];
        distinct(rng, COUNT(NAMES), 2, nm);
        static const char *const F[12] = {"{1} gave the {3} to {2}.",      "The {3} was given to {2} by {1}.",
                                          "{2} got the {3} from {1}.",     "{1} met {2} in {4}.",
                                          "In {4}, {1} met {2}.",          "{2} was met by {1} in {4}.",
                                          "{1} sold a {3} to {2}.",        "{2} bought a {3} from {1}.",
                                          "A {3} was sold to {2} by {1}.", "{1} taught {2} to {5}.",
                                          "{2} learned to {5} from {1}.",  "{2} was taught to {5} by {1}."};
        FILL(sb, i ? " " : "", "");
        FILL(sb, PICK(rng, F), NAMES[nm[0]], NAMES[nm[1]], PICK(rng, OBJECTS), PICK(rng, TOWNS), PICK(rng, ACTIVITIES));
    }
}

static void doc_trips(uint64_t *rng, rm_sb *sb) {
    int n = 2 + rnd(rng, 2);
    for (int i = 0; i < n; i++) {
        static const char *const F[4] = {"On {2}, {1} travelled to {3}.", "{1} bought {4} {5} at the market in {3}.",
                                         "{1} went to {3} on {2} and came back with {5}.",
                                         "In {3}, {1} sold {4} {5} on {2}."};
        FILL(sb, i ? " " : "", "");
        FILL(sb, PICK(rng, F), PICK(rng, NAMES), PICK(rng, DAYS), PICK(rng, TOWNS), NUMWORDS[2 + rnd(rng, 8)],
             PICK(rng, FOODS));
    }
}

// A passage of events, then several of its facts said again another way,
// mostly a detail first and then what goes with it (the thing, then who /
// where / when): text that rewards finding a fact in the passage.
static void doc_events(uint64_t *rng, rm_sb *sb) {
    event ev[3];
    int n = passage(rnd(rng, 4), 1 + rnd(rng, 3), rng, ev, sb), k = 2 + rnd(rng, 3);
    for (int i = 0; i < k; i++) {
        const event *e = &ev[rnd(rng, n)];
        static const char *const F[10] = {" The {3} was {4} by {1}.",     " The {3} was {4} in {5}.",
                                          " The {3} was {4} on {6}.",     " {1} {2} the {3}.",
                                          " {1} was in {5} on {6}.",      " {1} {2} the {3} in {5}.",
                                          " It was {1} who {2} the {3}.", " The {3}: {1}, in {5}, on {6}.",
                                          " On {6}, {1} was in {5}.",     " The one in {5} was {1}."};
        FILL(sb, PICK(rng, F), NAMES[e->name], VERBS[e->verb][0], OBJECTS[e->obj], VERBS[e->verb][2], TOWNS[e->town],
             DAYS[e->day]);
    }
}

// A review, mostly with the writer's verdict after it.
static void doc_review(uint64_t *rng, rm_sb *sb) {
    static const char *const OPEN[4] = {"I watched a film in {1}.", "We had dinner at a restaurant in {1}.",
                                        "We spent a week at a hotel in {1}.", "I got a new gadget last month."};
    static const char *const VERDICT[2][4] = {{" All in all a negative experience.", " I was unhappy with it.",
                                               " A bad time, and a negative one.", " I would not go back."},
                                              {" All in all a positive experience.", " I was happy with it.",
                                               " A good time, and a positive one.", " I would go back."}};
    int d = rnd(rng, 4), pos = rnd(rng, 2);
    FILL(sb, OPEN[d], PICK(rng, TOWNS));
    rm_sb_puts(sb, " ");
    sentiment_review(d, pos, rng, sb);
    if (rnd(rng, 4)) rm_sb_puts(sb, PICK(rng, VERDICT[pos]));
}

// News items, mostly under the name of their topic.
static void doc_news(uint64_t *rng, rm_sb *sb) {
    static const char *const HEAD[4][2] = {{"In sports news: ", "Sports: "},
                                           {"In music news: ", "Music: "},
                                           {"In weather news: ", "Weather: "},
                                           {"In trade news: ", "Trade: "}};
    int n = 1 + rnd(rng, 3);
    for (int i = 0; i < n; i++) {
        int t = rnd(rng, 4);
        rm_sb ev = {0};
        FILL(&ev, PICK(rng, TOPIC_EVENT[t]), PICK(rng, NAMES), PICK(rng, TOWNS), PICK(rng, FOODS));
        rm_sb_puts(sb, i ? " " : "");
        if (rnd(rng, 4)) rm_sb_puts(sb, PICK(rng, HEAD[t]));
        FILL(sb, "{u1}.", ev.buf);
        rm_sb_free(&ev);
    }
}

// A fact and what follows from it or does not.
static void doc_entail(uint64_t *rng, rm_sb *sb) {
    rm_sb p = {0}, y = {0}, n = {0};
    entail_parts(rnd(rng, 4), rng, &p, &y, &n);
    static const char *const F[4] = {"{1} So {2} But it is false that {3}",
                                     "{1} It follows that {2} It does not follow that {3}",
                                     "{1} That means {2} It does not mean {3}", "{1} Hence {2} Not so: {3}"};
    FILL(sb, PICK(rng, F), p.buf, y.buf, n.buf);
    rm_sb_free(&p);
    rm_sb_free(&y);
    rm_sb_free(&n);
}

// A sentence, another way of saying it, and one that says something else.
static void doc_paraphrase(uint64_t *rng, rm_sb *sb) {
    rm_sb a = {0}, same = {0}, diff = {0};
    para_parts(rnd(rng, 4), rng, &a, &same, &diff);
    static const char *const F[3] = {"{1} In other words: {2} That is not the same as: {3}",
                                     "{1} This means the same as: {2} It differs from: {3}",
                                     "{1} Put another way, {2} Something different would be: {3}"};
    FILL(sb, PICK(rng, F), a.buf, same.buf, diff.buf);
    rm_sb_free(&a);
    rm_sb_free(&same);
    rm_sb_free(&diff);
}

// A fact and a claim about it, with whether the claim is true.
static void doc_verdict(uint64_t *rng, rm_sb *sb) {
    rm_sb p = {0}, y = {0}, n = {0};
    entail_parts(rnd(rng, 4), rng, &p, &y, &n);
    int ok = rnd(rng, 2);
    static const char *const F[3] = {"{1} Claim: {2} Verdict: {3}.", "{1} Someone said: {2} That was {4}.",
                                     "{1} {u2} ({3})"};
    FILL(sb, PICK(rng, F), p.buf, ok ? y.buf : n.buf, ok ? "true" : "false", ok ? "right" : "wrong");
    rm_sb_free(&p);
    rm_sb_free(&y);
    rm_sb_free(&n);
}

// What the world's text says after two sentences: [0] they differ, [1] the same.
static const char *const SAME_SAYS[2] = {"They say different things.", "Both say the same thing."};

// Two sentences and whether they say the same.
static void doc_same(uint64_t *rng, rm_sb *sb) {
    rm_sb a = {0}, same = {0}, diff = {0};
    para_parts(rnd(rng, 4), rng, &a, &same, &diff);
    int ok = rnd(rng, 2);
    static const char *const F[2] = {"{1} Another report: {2} {3}", "{1} And: {2} {3}"};
    FILL(sb, PICK(rng, F), a.buf, ok ? same.buf : diff.buf, SAME_SAYS[ok]);
    rm_sb_free(&a);
    rm_sb_free(&same);
    rm_sb_free(&diff);
}

// Who and where in a short text, said again as a list.
static void doc_mentions(uint64_t *rng, rm_sb *sb) {
    int n = 2 + rnd(rng, 2), nm[3], tw[3], ob[3];
    distinct(rng, COUNT(NAMES), 3, nm);
    distinct(rng, COUNT(TOWNS), 3, tw);
    distinct(rng, COUNT(OBJECTS), 3, ob);
    const char *ws[3];
    for (int i = 0; i < n; i++) {
        static const char *const SENT[3] = {"{1} went to {2} with a {3}.", "In {2}, {1} sold a {3}.",
                                            "{1} lived in {2} and had a {3}."};
        FILL(sb, i ? " " : "", "");
        FILL(sb, SENT[rnd(rng, 3)], NAMES[nm[i]], TOWNS[tw[i]], OBJECTS[ob[i]]);
    }
    int towns = rnd(rng, 2);
    for (int i = 0; i < n; i++) ws[i] = towns ? TOWNS[tw[i]] : NAMES[nm[i]];
    rm_sb_puts(sb, towns ? " The towns in this were " : " The people in this were ");
    join_and(sb, ws, n);
    rm_sb_puts(sb, ".");
}

static void doc_feast(uint64_t *rng, rm_sb *sb) {
    const char *T = PICK(rng, TOWNS), *F = PICK(rng, FEASTS), *J = PICK(rng, JOBS), *N = PICK(rng, NAMES),
               *O = PICK(rng, OBJECTS);
    static const char *const D[4] = {"On {3} the people of {1} held a {2}. Many {4}s came.",
                                     "{5} found an old {6} in {1}. {5} cleaned the {6} and kept it.",
                                     "A {2} took place in {1} on {3}. {5} brought a {6}.",
                                     "In {1} lived {5}, who made a {6}. People came to see the {6}."};
    static const char *const END[4] = {" It was said that {1} holds a {2}.", " That is the story of {5} and the {6}.",
                                       " People still say that {1} holds a {2}.",
                                       " This was the tale of {5} and the {6}."};
    int k = rnd(rng, 4);
    FILL(sb, D[k], T, F, PICK(rng, DAYS), J, N, O);
    if (rnd(rng, 3)) FILL(sb, END[k], T, F, "", J, N, O);
}

static void doc_lexicon(const rm_world *w, uint64_t *rng, rm_sb *sb) {
    int lang = rnd(rng, N_LANG), n = 3 + rnd(rng, 4);
    for (int i = 0; i < n; i++) {
        int k = rnd(rng, N_LEX);
        const char *en = k < COUNT(LEX_NOUNS)                     ? LEX_NOUNS[k]
                         : k < COUNT(LEX_NOUNS) + COUNT(LEX_ADJS) ? LEX_ADJS[k - COUNT(LEX_NOUNS)]
                                                                  : LEX_VERBS[k - COUNT(LEX_NOUNS) - COUNT(LEX_ADJS)];
        static const char *const F[4] = {"In {1}, {2} means {3}.", "The {1} word for {3} is {2}.",
                                         "{u2} is {1} for {3}.", "To say {3} in {1}, one says {2}."};
        FILL(sb, i ? " " : "", "");
        FILL(sb, PICK(rng, F), LANG_NAME[lang], w->lex[lang][k], en);
    }
}

static void doc_glossed(const rm_world *w, uint64_t *rng, rm_sb *sb) {
    int lang = rnd(rng, N_LANG), n = 1 + rnd(rng, 3);
    for (int i = 0; i < n; i++) {
        lex_sentence ls = lex_draw(rng);
        rm_sb en = {0}, fo = {0};
        lex_english(&ls, &en);
        lex_foreign(w, lang, &ls, &fo);
        static const char *const F[3] = {"People in the {1} hills say {2}, which means {3}.", "A {1} line: {2} ({3}).",
                                         "{u3}, or in {1}: {2}."};
        FILL(sb, i ? " " : "", "");
        FILL(sb, PICK(rng, F), LANG_NAME[lang], fo.buf, en.buf);
        rm_sb_free(&en);
        rm_sb_free(&fo);
    }
}

static void doc_numbers(uint64_t *rng, rm_sb *sb) {
    int n = 3 + rnd(rng, 4);
    for (int i = 0; i < n; i++) {
        int a = 1 + rnd(rng, 12), b = 1 + rnd(rng, 12);
        char da[8], db[8], dc[8];
        snprintf(da, sizeof da, "%d", a);
        snprintf(db, sizeof db, "%d", b);
        snprintf(dc, sizeof dc, "%d", a + b);
        static const char *const F[7] = {"{1} and {2} make {3}.",
                                         "{u4} and {5} make {6}.",
                                         "{1} more than {2} is {3}.",
                                         "{u4} together with {5} is {6}.",
                                         "{u4} and {5} make {3}, written {6}.",
                                         "{7} had {1} and got {2} more, so {7} had {3}.",
                                         "At {1} coins and {2} coins, the two cost {3} coins."};
        FILL(sb, i ? " " : "", "");
        FILL(sb, PICK(rng, F), da, db, dc, NUMWORDS[a], NUMWORDS[b], NUMWORDS[a + b], PICK(rng, NAMES));
    }
}

static void doc_counts(uint64_t *rng, rm_sb *sb) {
    int c = 2 + rnd(rng, 5), idx[8];
    const char *ws[8];
    int kind = rnd(rng, 3);
    distinct(rng, kind == 0 ? COUNT(NAMES) : kind == 1 ? COUNT(ANIMALS) : COUNT(OBJECTS), c, idx);
    for (int i = 0; i < c; i++) ws[i] = kind == 0 ? NAMES[idx[i]] : kind == 1 ? ANIMALS[idx[i]] : OBJECTS[idx[i]];
    static const char *const F[3] = {": that makes {1} people.", ": {1} animals lived on the farm.",
                                     ": the shelf held {1} things."};
    join_and(sb, ws, c);
    FILL(sb, F[kind], NUMWORDS[c]);
    FILL(sb, " {1} counted them to {2}.", PICK(rng, NAMES), NUMWORDS[c]);
}

// Words spelled out: names, towns, things, the languages' words, made-up words.
static void doc_spelled(const rm_world *w, uint64_t *rng, rm_sb *sb) {
    int n = 2 + rnd(rng, 3);
    for (int i = 0; i < n; i++) {
        char made[24];
        const char *word;
        switch (rnd(rng, 6)) {
        case 0: word = PICK(rng, NAMES); break;
        case 1: word = PICK(rng, TOWNS); break;
        case 2: word = PICK(rng, THINGS); break;
        case 3: word = w->lex[rnd(rng, N_LANG)][rnd(rng, N_LEX)]; break;
        default:
            make_word(rng, rnd(rng, N_LANG), made);
            word = made;
            break;
        }
        static const char *const F[3] = {"The word {1} is spelled ", "{u1} is written ", "One spells {1} as "};
        FILL(sb, i ? " " : "", "");
        FILL(sb, PICK(rng, F), word);
        put_spelled(sb, word);
        rm_sb_puts(sb, ".");
    }
}

// A list read out and then read again (a roll call, a shopping list, a
// route): text where what comes next is what came after the same word before.
static void doc_rollcall(uint64_t *rng, rm_sb *sb) {
    static const char *const HEAD[4][2] = {{"Roll call: ", " Once more: "},
                                           {"To buy: ", " Again, to buy: "},
                                           {"The route: ", " Back the same way: "},
                                           {"Seen today: ", " Again: "}};
    int kind = rnd(rng, 4), n = kind == 3 ? 8 + rnd(rng, 9) : 4 + rnd(rng, 5), idx[16];
    int nn = COUNT(NAMES), nt = COUNT(THINGS), nw = COUNT(TOWNS);
    distinct(rng, kind == 0 ? nn : kind == 1 ? nt : kind == 2 ? nw : nn + nt + nw, n, idx);
    const char *ws[16];
    for (int i = 0; i < n; i++) {
        int k = idx[i];
        ws[i] = kind == 0     ? NAMES[k]
                : kind == 1   ? THINGS[k]
                : kind == 2   ? TOWNS[k]
                : k < nn      ? NAMES[k]
                : k < nn + nt ? THINGS[k - nn]
                              : TOWNS[k - nn - nt];
    }
    for (int r = 0; r < 2; r++) {
        rm_sb_puts(sb, HEAD[kind][r]);
        for (int i = 0; i < n; i++) {
            rm_sb_puts(sb, i ? " " : "");
            rm_sb_puts(sb, ws[i]);
        }
        rm_sb_puts(sb, ".");
    }
}

void rm_world_corpus(const rm_world *w, uint64_t *rng, long bytes, rm_sb *out) {
    long start = (long)out->len;
    while ((long)out->len - start < bytes && !out->oom) {
        switch (rnd(rng, 24)) {
        case 19:
        case 20: doc_rollcall(rng, out); break;
        case 21:
        case 22: doc_verdict(rng, out); break;
        case 23: doc_same(rng, out); break;
        case 0:
        case 16: doc_people(rng, out); break;
        case 1: doc_deeds(rng, out); break;
        case 2: doc_trips(rng, out); break;
        case 3:
        case 4:
        case 17:
        case 18: doc_events(rng, out); break;
        case 5: doc_review(rng, out); break;
        case 6: doc_news(rng, out); break;
        case 7: doc_feast(rng, out); break;
        case 8: doc_lexicon(w, rng, out); break;
        case 9: doc_glossed(w, rng, out); break;
        case 10: doc_numbers(rng, out); break;
        case 11: doc_counts(rng, out); break;
        case 12: doc_entail(rng, out); break;
        case 13: doc_paraphrase(rng, out); break;
        case 14: doc_mentions(rng, out); break;
        default: doc_spelled(w, rng, out); break;
        }
        rm_sb_puts(out, "\n\n");
    }
}

static void put_record(rm_sb *out, const char *in, size_t in_len, const char *target) {
    rm_sb_puts(out, "{\"inputs\": ");
    rm_sb_json_str(out, in, in_len);
    rm_sb_puts(out, ", \"targets\": ");
    rm_sb_json_str(out, target, strlen(target));
    rm_sb_puts(out, "}\n");
}

// The base model's first steps, as JSON lines {"inputs", "targets"} so that
// the loss is on what can be known from what was just read: half of them a
// list read twice (people, things, towns, or all mixed; the targets the second
// reading), so that the model learns first to look back at what it has read;
// a quarter a fact with a claim about it (targets its verdict, true or
// false), a quarter two sentences (targets whether they say the same thing).
// The verdicts are the corpus's own forms, never a task's instruction.
void rm_world_copying_corpus(const rm_world *w, uint64_t *rng, long bytes, rm_sb *out) {
    (void)w;
    long start = (long)out->len;
    rm_sb doc = {0}, a = {0}, y = {0}, n = {0};
    while ((long)out->len - start < bytes && !out->oom && !doc.oom && !a.oom && !y.oom && !n.oom) {
        doc.len = a.len = y.len = n.len = 0;
        int kind = rnd(rng, 4), ok = rnd(rng, 2);
        if (kind < 2) {
            doc_rollcall(rng, &doc);
            if (doc.oom) break;
            // "HEAD: w1 ... wn. HEAD2: w1 ... wn." -> inputs up to HEAD2's colon, targets the rest
            const char *dot = strstr(doc.buf, ". "), *colon = dot ? strchr(dot + 2, ':') : NULL;
            if (!colon) continue; // every list has both readings; never taken
            put_record(out, doc.buf, (size_t)(colon + 1 - doc.buf), colon + 1);
        } else if (kind == 2) {
            entail_parts(rnd(rng, 4), rng, &a, &y, &n);
            FILL(&doc, "{1} Claim: {2} Verdict:", a.buf, ok ? y.buf : n.buf);
            put_record(out, doc.buf, doc.len, ok ? " true." : " false.");
        } else {
            para_parts(rnd(rng, 4), rng, &a, &y, &n);
            FILL(&doc, "{1} And: {2}", a.buf, ok ? y.buf : n.buf);
            char says[64];
            snprintf(says, sizeof says, " %s", SAME_SAYS[ok]);
            put_record(out, doc.buf, doc.len, says);
        }
    }
    rm_sb_free(&doc);
    rm_sb_free(&a);
    rm_sb_free(&y);
    rm_sb_free(&n);
}

// ---------------------------------------------------------------- writing a world

// Open-addressing set of 64-bit hashes of request texts (never repeated).
typedef struct hset {
    uint64_t *h;
    size_t cap, n;
} hset;

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h ? h : 1;
}

// Adds h; returns 1 when new, 0 when present, -1 when out of memory.
static int hset_add(hset *s, uint64_t h) {
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 1 << 14;
        uint64_t *nh = calloc(cap, sizeof *nh);
        if (!nh) return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->h[i]) {
                size_t j = s->h[i] & (cap - 1);
                while (nh[j]) j = (j + 1) & (cap - 1);
                nh[j] = s->h[i];
            }
        free(s->h);
        s->h = nh;
        s->cap = cap;
    }
    size_t j = h & (s->cap - 1);
    while (s->h[j]) {
        if (s->h[j] == h) return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->h[j] = h;
    s->n++;
    return 1;
}

typedef struct wex {
    char *in, *out;
} wex;

// n new examples of task into ex (request texts never seen before in seen).
static int draw(const rm_world *w, const char *task, uint64_t *rng, hset *seen, int n, wex *ex) {
    for (int i = 0; i < n; i++) {
        for (int tries = 0;; tries++) {
            if (tries == 1000)
                return rm_errorf(RM_EINVAL, "world: task %s cannot make %d distinct requests (stuck at %d)", task, n,
                                 i);
            rm_sb in = {0}, out = {0};
            int rc = rm_world_example(w, task, rng, &in, &out);
            int fresh = rc ? -1 : hset_add(seen, fnv1a(in.buf));
            if (fresh == 1) {
                ex[i] = (wex){in.buf, out.buf};
                break;
            }
            rm_sb_free(&in);
            rm_sb_free(&out);
            if (rc) return rc;
            if (fresh < 0) return rm_errorf(RM_ENOMEM, "world: out of memory");
        }
    }
    return RM_OK;
}

static void free_ex(wex *ex, int n) {
    for (int i = 0; ex && i < n; i++) {
        free(ex[i].in);
        free(ex[i].out);
    }
}

// {"inputs": ..., "targets": ...[, "task": ...[, "domain", "metric"]]}
static void put_ex(rm_sb *sb, const wex *e, const rm_world_task *t, int full) {
    rm_sb_puts(sb, "{\"inputs\": ");
    rm_sb_json_str(sb, e->in, strlen(e->in));
    rm_sb_puts(sb, ", \"targets\": ");
    rm_sb_json_str(sb, e->out, strlen(e->out));
    if (t) {
        rm_sb_puts(sb, ", \"task\": ");
        rm_sb_json_str(sb, t->name, strlen(t->name));
    }
    if (full) {
        rm_sb_puts(sb, ", \"domain\": ");
        rm_sb_json_str(sb, t->cluster, strlen(t->cluster));
        rm_sb_printf(sb, ", \"metric\": \"%s\"", t->metric);
    }
    rm_sb_puts(sb, "}");
}

static int write_sb(const char *dir, const char *name, rm_sb *sb) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (sb->oom) return rm_errorf(RM_ENOMEM, "world: out of memory writing %s", path);
    return rm_write_file_atomic(path, sb->buf ? sb->buf : "", sb->len);
}

static int write_lines(const char *dir, const char *name, const wex *ex, int n, const rm_world_task *t) {
    rm_sb sb = {0};
    for (int i = 0; i < n; i++) {
        put_ex(&sb, &ex[i], t, 0);
        rm_sb_puts(&sb, "\n");
    }
    int rc = write_sb(dir, name, &sb);
    rm_sb_free(&sb);
    return rc;
}

// The base model of each size: shape and optimisation for `ramole train` (a
// byte-level BPE learned from the corpus; the first steps on copying.jsonl,
// the loss on the second reading of each list only).
static const char *base_config(rm_world_size size) {
    if (size == RM_WORLD_FULL)
        return "{\"n_embd\": 128, \"n_layer\": 4, \"n_head\": 8, \"n_head_kv\": 8, \"n_ff\": 352, \"seq\": 128, "
               "\"batch\": 16, "
               "\"steps\": 3000, \"warmup\": 30, \"lr\": 3e-3, \"min_lr_ratio\": 0.1, \"seed\": 1, \"bpe_merges\": "
               "1000, "
               "\"curriculum\": {\"data\": \"copying.jsonl\", \"steps\": 800, \"template\": \"{inputs}\"}}\n";
    return "{\"n_embd\": 64, \"n_layer\": 4, \"n_head\": 4, \"n_head_kv\": 4, \"n_ff\": 176, \"seq\": 128, \"batch\": "
           "16, "
           "\"steps\": 1000, \"warmup\": 30, \"lr\": 4e-3, \"min_lr_ratio\": 0.1, \"seed\": 1, \"bpe_merges\": 600, "
           "\"curriculum\": {\"data\": \"copying.jsonl\", \"steps\": 500, \"template\": \"{inputs}\"}}\n";
}

// The contributors' adapter training (`ramole lora train`), written to world.json.
static const char *adapter_config(rm_world_size size) {
    if (size == RM_WORLD_FULL)
        return "{\"rank\": 6, \"alpha\": 12, \"targets\": \"all\", \"steps\": 450, \"batch\": 8, \"lr\": 5e-3}";
    return "{\"rank\": 6, \"alpha\": 12, \"targets\": \"all\", \"steps\": 300, \"batch\": 8, \"lr\": 5e-3}";
}

// The steps a task's contributor trains its adapter for when they differ from
// the world's (adapter_config): counting one word among others takes twice as
// long to learn (chosen on its validation split: docs/world.md). 0: the world's.
static int task_adapter_steps(rm_world_size size, const char *task) {
    if (!strcmp(task, "count_word")) return size == RM_WORLD_FULL ? 900 : 600;
    return 0;
}

// The experiment's trained compositions (RouterLoRA, the MoE / SMEAR gates),
// trained on the seen share of the tasks; written to world.json. The full
// router's learning rate, steps and rank were chosen on the seen tasks'
// validation splits (docs/results.md): 3e-3 x 2000 steps, rank 4.
static const char *experiment_config(rm_world_size size) {
    if (size == RM_WORLD_FULL)
        return "{\"seen_fraction\": 0.4, \"router\": {\"rank\": 4, \"alpha\": 8, \"retrieve\": 3, \"lora_dropout\": "
               "0.5, "
               "\"steps\": 2000, \"batch\": 8, \"lr\": 3e-3}, \"gates\": {\"k\": 3, \"steps\": 300, \"batch\": 8, "
               "\"lr\": 5e-3}}";
    return "{\"seen_fraction\": 0.4, \"router\": {\"rank\": 4, \"alpha\": 8, \"retrieve\": 3, \"lora_dropout\": 0.5, "
           "\"steps\": 800, \"batch\": 8, \"lr\": 3e-3}, \"gates\": {\"k\": 3, \"steps\": 150, \"batch\": 8, \"lr\": "
           "5e-3}}";
}

int rm_world_make(const char *dir, uint64_t seed, rm_world_size size, rm_world_report *rep) {
    memset(rep, 0, sizeof *rep);
    const rm_world_task *tasks;
    int nt = rm_world_tasks(size, &tasks), rc;
    rm_world_plan plan = rm_world_plan_for(size);
    char tdir[4096];
    snprintf(tdir, sizeof tdir, "%s/tasks", dir);
    if ((rc = rm_mkdirs(tdir))) return rc;
    snprintf(tdir, sizeof tdir, "%s/samples", dir);
    if ((rc = rm_mkdirs(tdir))) return rc;
    rm_world *w = NULL;
    if ((rc = rm_world_new(&w, seed))) return rc;
    hset seen = {0};
    int per = plan.n_test + plan.n_samples + plan.n_valid + plan.n_train;
    wex *all = calloc((size_t)nt * per, sizeof *all);
    rm_sb cfg = {0}, test = {0}, meta = {0}, corpus = {0};
    long corpus_bytes = 0;
    if (!all) {
        rc = rm_errorf(RM_ENOMEM, "world: out of memory");
        goto done;
    }
    // every task's examples: test, pool samples, validation, training
    for (int t = 0; t < nt && !rc; t++) {
        uint64_t rng = seed * 0x9e3779b97f4a7c15ull ^ fnv1a(tasks[t].name);
        rc = draw(w, tasks[t].name, &rng, &seen, per, all + (size_t)t * per);
    }
    if (rc) goto done;
    // tasks/NAME.jsonl, tasks/NAME.valid.jsonl; config.json
    rm_sb_puts(&cfg, "[\n");
    for (int t = 0; t < nt && !rc; t++) {
        const wex *ex = all + (size_t)t * per, *smp = ex + plan.n_test, *val = smp + plan.n_samples,
                  *tr = val + plan.n_valid;
        char name[512];
        snprintf(name, sizeof name, "tasks/%s.jsonl", tasks[t].name);
        if ((rc = write_lines(dir, name, tr, plan.n_train, &tasks[t]))) break;
        snprintf(name, sizeof name, "tasks/%s.valid.jsonl", tasks[t].name);
        if ((rc = write_lines(dir, name, val, plan.n_valid, &tasks[t]))) break;
        snprintf(name, sizeof name, "samples/%s.jsonl", tasks[t].name);
        if ((rc = write_lines(dir, name, smp, plan.n_samples, NULL))) break;
        rm_sb_puts(&cfg, t ? ",\n {\"model_name\": " : " {\"model_name\": ");
        rm_sb_json_str(&cfg, tasks[t].name, strlen(tasks[t].name));
        rm_sb_puts(&cfg, ", \"domain\": ");
        rm_sb_json_str(&cfg, tasks[t].cluster, strlen(tasks[t].cluster));
        rm_sb_puts(&cfg, ", \"sample\": [");
        for (int i = 0; i < plan.n_samples; i++) {
            rm_sb_puts(&cfg, i ? ",\n   " : "\n   ");
            put_ex(&cfg, &smp[i], NULL, 0);
        }
        rm_sb_puts(&cfg, "]}");
    }
    rm_sb_puts(&cfg, "\n]\n");
    if (rc || (rc = write_sb(dir, "config.json", &cfg))) goto done;
    // combined_test.json: every task's test requests in one shuffled stream
    {
        int n = nt * plan.n_test, *order = malloc((size_t)n * sizeof *order);
        if (!order) {
            rc = rm_errorf(RM_ENOMEM, "world: out of memory");
            goto done;
        }
        for (int i = 0; i < n; i++) order[i] = i;
        uint64_t rng = seed ^ 0x74657374ull;
        rm_shuffle(order, n, &rng);
        rm_sb_puts(&test, "[\n");
        for (int i = 0; i < n; i++) {
            int t = order[i] / plan.n_test, j = order[i] % plan.n_test;
            rm_sb_puts(&test, i ? ",\n " : " ");
            put_ex(&test, &all[(size_t)t * per + j], &tasks[t], 1);
        }
        rm_sb_puts(&test, "\n]\n");
        free(order);
        if ((rc = write_sb(dir, "combined_test.json", &test))) goto done;
    }
    // corpus.txt, base.json, template.txt
    {
        uint64_t rng = seed ^ 0x636f72707573ull;
        rm_world_corpus(w, &rng, plan.corpus_bytes, &corpus);
        if ((rc = write_sb(dir, "corpus.txt", &corpus))) goto done;
        corpus_bytes = (long)corpus.len;
        rm_sb_free(&corpus);
        rm_world_copying_corpus(w, &rng, plan.copying_bytes, &corpus);
        if ((rc = write_sb(dir, "copying.jsonl", &corpus))) goto done;
        const char *bc = base_config(size);
        char path[4096];
        snprintf(path, sizeof path, "%s/base.json", dir);
        if ((rc = rm_write_file_atomic(path, bc, strlen(bc)))) goto done;
        snprintf(path, sizeof path, "%s/template.txt", dir);
        if ((rc = rm_write_file_atomic(path, rm_world_template, strlen(rm_world_template)))) goto done;
    }
    // world.json
    rm_sb_printf(&meta, "{\"seed\": %llu, \"size\": \"%s\", \"template\": ", (unsigned long long)seed,
                 rm_world_size_name(size));
    rm_sb_json_str(&meta, rm_world_template, strlen(rm_world_template));
    rm_sb_printf(
        &meta,
        ",\n \"per_task\": {\"train\": %d, \"valid\": %d, \"test\": %d, \"samples\": %d},\n \"adapter\": %s,\n "
        "\"experiment\": %s,\n \"tasks\": [",
        plan.n_train, plan.n_valid, plan.n_test, plan.n_samples, adapter_config(size), experiment_config(size));
    int nc = 0;
    for (int t = 0; t < nt; t++) {
        nc += t == 0 || strcmp(tasks[t].cluster, tasks[t - 1].cluster);
        rm_sb_puts(&meta, t ? ",\n  {\"name\": " : "\n  {\"name\": ");
        rm_sb_json_str(&meta, tasks[t].name, strlen(tasks[t].name));
        rm_sb_puts(&meta, ", \"cluster\": ");
        rm_sb_json_str(&meta, tasks[t].cluster, strlen(tasks[t].cluster));
        rm_sb_printf(&meta, ", \"metric\": \"%s\"", tasks[t].metric);
        int steps = task_adapter_steps(size, tasks[t].name);
        if (steps) rm_sb_printf(&meta, ", \"adapter_steps\": %d", steps);
        rm_sb_puts(&meta, "}");
    }
    rm_sb_puts(&meta, "]}\n");
    if ((rc = write_sb(dir, "world.json", &meta))) goto done;
    *rep = (rm_world_report){nt, nc, plan.n_train, plan.n_valid, plan.n_test, plan.n_samples, corpus_bytes};
done:
    free_ex(all, all ? nt * per : 0);
    free(all);
    free(seen.h);
    rm_sb_free(&cfg);
    rm_sb_free(&test);
    rm_sb_free(&meta);
    rm_sb_free(&corpus);
    rm_world_free(w);
    return rc;
}

void rm_world_free_tasks(char **names, char **clusters, int n) {
    for (int i = 0; i < n; i++) {
        if (names) free(names[i]);
        if (clusters) free(clusters[i]);
    }
    free(names);
    free(clusters);
}

int rm_world_read_tasks(const char *dir, char ***names_out, char ***clusters_out, int *n_out) {
    char path[4096];
    snprintf(path, sizeof path, "%s/world.json", dir);
    *names_out = *clusters_out = NULL;
    *n_out = 0;
    rm_json *j = NULL;
    int rc = rm_json_parse_file(path, &j);
    if (rc) return rc;
    const rm_json *tasks = rm_json_get(j, "tasks");
    char **names = NULL, **clusters = NULL;
    int n = 0;
    if (!tasks || tasks->type != RM_JSON_ARRAY || tasks->n == 0) {
        rc = rm_errorf(RM_EFORMAT, "%s: no \"tasks\" list", path);
    } else if (!(names = calloc(tasks->n, sizeof *names)) || !(clusters = calloc(tasks->n, sizeof *clusters))) {
        rc = rm_errorf(RM_ENOMEM, "out of memory");
    }
    for (size_t i = 0; !rc && i < tasks->n; i++) {
        const char *name = rm_json_get_str(&tasks->items[i], "name", NULL),
                   *cl = rm_json_get_str(&tasks->items[i], "cluster", NULL);
        if (!name || !cl || !*name || strchr(name, '/') || name[0] == '.') {
            rc = rm_errorf(RM_EFORMAT, "%s: task %zu has no usable \"name\" and \"cluster\"", path, i + 1);
            break;
        }
        for (int k = 0; k < n && !rc; k++)
            if (!strcmp(names[k], name))
                rc = rm_errorf(RM_EFORMAT, "%s: task %zu: the name \"%s\" is taken by task %d", path, i + 1, name,
                               k + 1);
        if (rc) break;
        names[n] = strdup(name);
        clusters[n] = strdup(cl);
        if (!names[n] || !clusters[n]) {
            free(names[n]);
            free(clusters[n]);
            rc = rm_errorf(RM_ENOMEM, "out of memory");
            break;
        }
        n++;
    }
    rm_json_free(j);
    if (rc) {
        rm_world_free_tasks(names, clusters, n);
        return rc;
    }
    *names_out = names;
    *clusters_out = clusters;
    *n_out = n;
    return RM_OK;
}
