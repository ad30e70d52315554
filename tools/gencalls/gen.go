package main

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
)

// A record is built straight into a byte slice: the shape is fixed, the keys
// come in a fixed order, and every string that can appear is JSON-escaped
// once, at start-up. That keeps a million records to about a second.

// Contact reasons, in the order of the tables below.
const (
	cancellation = iota
	billing
	technical
	upgrade
	moving
	general
	numReasons
)

var reasonLabels = [numReasons]string{"Cancellation", "Billing", "Technical issue", "Upgrade", "Moving", "General inquiry"}

// reasonWeights is how often customers call about each reason (per mille).
var reasonWeights = weights(140, 240, 240, 110, 80, 190)

// churn[reason] = per-mille chances of High and Medium (the rest is Low),
// before a competitor mention raises High.
var churn = [numReasons][2]int{
	cancellation: {700, 220},
	billing:      {120, 430},
	technical:    {120, 430},
	upgrade:      {20, 150},
	moving:       {250, 400},
	general:      {40, 260},
}

// competitorChance[reason]: per mille of calls that name a competitor.
var competitorChance = [numReasons]int{
	cancellation: 550, billing: 150, technical: 80, upgrade: 150, moving: 200, general: 60,
}

var (
	competitors       = []string{"Telia", "Tele2", "Telenor", "Tre"}
	competitorWeights = weights(380, 270, 200, 150)
)

// sentiment[reason] = per-mille chances of Negative, Neutral (rest Positive).
var sentiment = [numReasons][2]int{
	cancellation: {700, 250},
	billing:      {550, 400},
	technical:    {600, 350},
	upgrade:      {50, 450},
	moving:       {100, 700},
	general:      {100, 600},
}

// Queues a reason is routed to, with per-mille weights.
var queues = [numReasons][]weighted{
	cancellation: {{"retention", 900}, {"billing", 100}},
	billing:      {{"billing", 900}, {"support", 100}},
	technical:    {{"support", 950}, {"sales", 50}},
	upgrade:      {{"sales", 900}, {"support", 100}},
	moving:       {{"support", 500}, {"retention", 300}, {"sales", 200}},
	general:      {{"support", 600}, {"sales", 250}, {"billing", 150}},
}

type weighted struct {
	s string
	w int
}

var channels = []weighted{{"phone", 500}, {"chat", 350}, {"email", 150}}

// Product kinds pick the technical-issue texts.
const (
	kindFiber = iota
	kindMobile
	kindTV
	numKinds
)

type product struct {
	id     string
	kind   int
	sv, en string // how customers name it
	weight int
}

var products = []product{
	{"fiber_100", kindFiber, "Fiber 100", "Fiber 100", 180},
	{"fiber_500", kindFiber, "Fiber 500", "Fiber 500", 160},
	{"fiber_1000", kindFiber, "Fiber 1000", "Fiber 1000", 60},
	{"mobile_unlimited", kindMobile, "Mobil Obegränsad", "Mobile Unlimited", 200},
	{"mobile_20gb", kindMobile, "Mobil 20 GB", "Mobile 20 GB", 140},
	{"tv_bas", kindTV, "TV Bas", "TV Basic", 160},
	{"tv_plus", kindTV, "TV Plus", "TV Plus", 100},
}

var cities = []string{
	"Stockholm", "Göteborg", "Malmö", "Uppsala", "Västerås", "Örebro", "Linköping",
	"Helsingborg", "Jönköping", "Norrköping", "Umeå", "Luleå", "Gävle", "Sundsvall",
}

var months = [2][]string{
	{"januari", "februari", "mars", "april", "maj", "juni", "juli", "augusti", "september", "oktober", "november", "december"},
	{"January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"},
}

// Languages: index into the text tables.
const (
	sv = iota
	en
)

var languages = [2]string{sv: "sv", en: "en"}

// swedishShare: per mille of calls held in Swedish.
const swedishShare = 650

// Template placeholders.
const (
	varNone = iota
	varCompetitor
	varProduct
	varPrice
	varCity
	varMonth
)

var placeholders = map[string]int{
	"comp": varCompetitor, "prod": varProduct, "price": varPrice, "city": varCity, "month": varMonth,
}

// texts[lang][reason] without a competitor; competitorTexts[lang][reason]
// name one ({comp}); technicalTexts[lang][kind] replace texts[lang][technical]
// by product kind.
var (
	texts = [2][numReasons][]string{
		sv: {
			cancellation: {
				"Jag vill säga upp mitt abonnemang.",
				"Hej, jag vill säga upp {prod} från och med nästa månad.",
				"Jag har betalat för mycket alldeles för länge, jag vill avsluta mitt avtal.",
				"Hur lång är uppsägningstiden? Jag vill avsluta {prod}.",
				"Jag är så trött på att internet hela tiden går ner, jag säger upp allt nu.",
				"Min mamma har gått bort och jag behöver säga upp hennes abonnemang.",
				"Kan ni bekräfta att min uppsägning av {prod} är registrerad? Jag har inte fått något mejl.",
				"Vi flyttar ihop och behöver bara ett abonnemang, så jag vill säga upp mitt.",
			},
			billing: {
				"Varför är min faktura {price} kr den här månaden? Den brukar vara lägre.",
				"Jag har blivit dubbeldebiterad för {prod}.",
				"Jag har fått en påminnelseavgift fast jag betalade i tid.",
				"Kan jag byta till autogiro istället för pappersfaktura?",
				"Fakturan stämmer inte, ni har tagit betalt för {prod} som jag sa upp i {month}.",
				"Hej! Jag vill ha e-faktura till min bank istället.",
				"Det står en avgift på fakturan som jag inte förstår, vad är det?",
				"Kampanjpriset skulle gälla i tolv månader men nu har priset gått upp.",
			},
			upgrade: {
				"Jag vill uppgradera till {prod}, vad kostar det?",
				"Kan jag få snabbare fiber? Vi jobbar hemifrån båda två nu.",
				"Jag vill lägga till ett extra mobilabonnemang för min dotter.",
				"Finns det något paket med både tv och bredband?",
				"Jag vill ha obegränsad surf istället för 20 GB.",
				"Vad skulle det kosta att byta till {prod}? Det nuvarande räcker inte.",
			},
			moving: {
				"Vi flyttar till {city} den 1 {month}, kan jag ta med mig {prod}?",
				"Jag ska flytta och undrar om ni har fiber på min nya adress i {city}.",
				"Hur gör jag för att flytta mitt abonnemang till en ny adress?",
				"Vi flyttar ihop, kan vi slå ihop våra abonnemang?",
				"Jag har sålt lägenheten och flyttar i {month}, vad händer med {prod}?",
			},
			general: {
				"Vilka öppettider har er butik i {city}?",
				"Hur byter jag lösenord på Mina sidor?",
				"Jag vill bara kontrollera vilket abonnemang jag har.",
				"Kan ni skicka ett nytt SIM-kort till mig?",
				"Hur ändrar jag min e-postadress hos er?",
				"Tack för hjälpen i går, allt fungerar nu!",
			},
		},
		en: {
			cancellation: {
				"I want to cancel my subscription.",
				"Hi, I'd like to cancel {prod} at the end of the month.",
				"How long is the notice period? I want to end my contract.",
				"I've had enough of the outages, please cancel everything.",
				"Can you confirm my cancellation of {prod} went through? I never got an email.",
				"My father passed away and I need to close his account.",
				"I'm moving abroad so I need to cancel {prod}.",
			},
			billing: {
				"Why is my bill {price} kr this month? It's usually lower.",
				"I've been charged twice for {prod}.",
				"I got a late fee even though I paid on time.",
				"Can I switch to direct debit instead of paper invoices?",
				"The invoice is wrong, you charged me for {prod} after I cancelled it in {month}.",
				"There's a fee on my invoice I don't recognise, what is it?",
				"The campaign price was supposed to last twelve months but it has already gone up.",
			},
			upgrade: {
				"I'd like to upgrade to {prod}, how much does it cost?",
				"Can I get faster fiber? We both work from home now.",
				"I want to add another mobile plan for my daughter.",
				"Do you have a bundle with both TV and broadband?",
				"I want unlimited data instead of 20 GB.",
			},
			moving: {
				"We're moving to {city} on 1 {month}, can I take {prod} with me?",
				"I'm moving and want to know if you have fiber at my new address in {city}.",
				"How do I move my subscription to a new address?",
				"I sold my flat and I'm moving in {month}, what happens to {prod}?",
			},
			general: {
				"What are the opening hours of your store in {city}?",
				"How do I change my password on My Pages?",
				"I just want to check which plan I'm on.",
				"Can you send me a new SIM card?",
				"Thanks for the help yesterday, everything works now!",
			},
		},
	}

	technicalTexts = [2][numKinds][]string{
		sv: {
			kindFiber: {
				"Internet har legat nere sedan i morse, routern blinkar rött.",
				"Fibern är jättelångsam på kvällarna, jag får bara 20 Mbit fast jag har {prod}.",
				"Wifi:t tappar anslutningen hela tiden, jag har startat om routern flera gånger.",
				"Min router funkar inte, det står någon DNS error i webbläsaren.",
				"Vi har inget internet alls, hela huset är utan uppkoppling.",
			},
			kindMobile: {
				"Jag har ingen täckning hemma, samtalen bryts hela tiden.",
				"Mobildatan funkar inte efter att jag bytte telefon.",
				"Jag kan inte ringa eller skicka sms sedan i går.",
				"Mitt nya eSIM har inte aktiverats ännu.",
			},
			kindTV: {
				"TV-boxen startar inte, den står bara och laddar.",
				"Jag har tappat flera kanaler i {prod}.",
				"Bilden hackar hela tiden när vi tittar på fotboll.",
			},
		},
		en: {
			kindFiber: {
				"The internet has been down since this morning, the router is blinking red.",
				"My fiber is really slow in the evenings, I only get 20 Mbit on {prod}.",
				"The wifi keeps dropping, I've restarted the router several times.",
				"My router isn't working, the browser shows some DNS error.",
			},
			kindMobile: {
				"I have no coverage at home, calls keep dropping.",
				"Mobile data stopped working after I switched phones.",
				"My new eSIM still hasn't been activated.",
			},
			kindTV: {
				"The TV box won't start, it just keeps loading.",
				"I've lost several channels on {prod}.",
				"The picture keeps freezing when we watch football.",
			},
		},
	}

	competitorTexts = [2][numReasons][]string{
		sv: {
			cancellation: {
				"Jag vill säga upp mitt abonnemang, {comp} erbjuder bättre pris",
				"{comp} har ett erbjudande på {price} kr i månaden, kan ni matcha det annars säger jag upp.",
				"Jag har redan tecknat avtal med {comp}, hur säger jag upp {prod} hos er?",
				"Min granne har {comp} och betalar hälften, jag vill avsluta.",
				"Jag går över till {comp}. Vad händer med bindningstiden?",
			},
			billing: {
				"Priset har höjts igen, {comp} tar bara {price} kr för samma sak.",
				"Jag betalar mer än min kompis hos {comp}, kan ni sänka priset?",
			},
			technical: {
				"Internet går ner varje vecka, det hände aldrig när jag hade {comp}.",
				"Min kollega med {comp} har full täckning här men jag har ingen.",
			},
			upgrade: {
				"{comp} har 1000 Mbit för {price} kr, har ni något liknande om jag uppgraderar?",
				"Jag funderar på {comp}, men om ni ger mig {prod} till samma pris stannar jag.",
			},
			moving: {
				"I nya lägenheten i {city} finns bara {comp}, vad händer med mitt avtal?",
			},
			general: {
				"Vad skiljer er från {comp} egentligen?",
			},
		},
		en: {
			cancellation: {
				"I want to cancel, I found a better deal with {comp}",
				"{comp} offered me {price} kr a month, can you match that or should I cancel?",
				"I've already signed up with {comp}, how do I cancel {prod} with you?",
				"Switching to {comp}, what happens with my binding period?",
				"My neighbour pays half with {comp}, I want out.",
			},
			billing: {
				"The price went up again, {comp} charges only {price} kr for the same thing.",
				"I pay more than my friend does with {comp}, can you lower my price?",
			},
			technical: {
				"The internet goes down every week, that never happened with {comp}.",
				"My colleague on {comp} has full coverage here but I have none.",
			},
			upgrade: {
				"{comp} offers 1000 Mbit for {price} kr, do you have something similar if I upgrade?",
			},
			moving: {
				"The new flat in {city} only has {comp}, what happens with my contract?",
			},
			general: {
				"What's the actual difference between you and {comp}?",
			},
		},
	}
)

// template is a text split at its placeholders, literals pre-escaped.
type template []segment

type segment struct {
	lit []byte
	v   int
}

func parseTemplate(s string) template {
	var t template
	for s != "" {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			t = append(t, segment{lit: escape(s)})
			break
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			panic("gencalls: unclosed placeholder in " + strconv.Quote(s))
		}
		v, ok := placeholders[s[i+1:i+j]]
		if !ok {
			panic("gencalls: unknown placeholder in " + strconv.Quote(s))
		}
		if i > 0 {
			t = append(t, segment{lit: escape(s[:i])})
		}
		t = append(t, segment{v: v})
		s = s[i+j+1:]
	}
	return t
}

func parseAll(ss []string) []template {
	ts := make([]template, len(ss))
	for i, s := range ss {
		ts[i] = parseTemplate(s)
	}
	return ts
}

// Pre-escaped tables, filled by init.
var (
	tplTexts      [2][numReasons][]template
	tplTechnical  [2][numKinds][]template
	tplCompetitor [2][numReasons][]template
	escCities     [][]byte
	escMonths     [2][][]byte
	escProducts   [2][][]byte
)

func init() {
	for lang := range 2 {
		for r := range numReasons {
			tplTexts[lang][r] = parseAll(texts[lang][r])
			tplCompetitor[lang][r] = parseAll(competitorTexts[lang][r])
		}
		for k := range numKinds {
			tplTechnical[lang][k] = parseAll(technicalTexts[lang][k])
		}
		for _, m := range months[lang] {
			escMonths[lang] = append(escMonths[lang], escape(m))
		}
		for _, p := range products {
			name := p.sv
			if lang == en {
				name = p.en
			}
			escProducts[lang] = append(escProducts[lang], escape(name))
		}
	}
	for _, c := range cities {
		escCities = append(escCities, escape(c))
	}
}

// escape returns s JSON-escaped, without the quotes.
func escape(s string) []byte {
	q := appendString(nil, s)
	return q[1 : len(q)-1]
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// cumulative weights for picking by r.IntN(total).
type cumulative []int

func weights(ws ...int) cumulative {
	c := make(cumulative, len(ws))
	sum := 0
	for i, w := range ws {
		sum += w
		c[i] = sum
	}
	return c
}

func (c cumulative) pick(r *rand.Rand) int {
	x := r.IntN(c[len(c)-1])
	for i, v := range c {
		if x < v {
			return i
		}
	}
	return len(c) - 1
}

var (
	productWeights = func() cumulative {
		ws := make([]int, len(products))
		for i, p := range products {
			ws[i] = p.weight
		}
		return weights(ws...)
	}()
	channelWeights = weightsOf(channels)
	queueWeights   = func() (qs [numReasons]cumulative) {
		for r := range numReasons {
			qs[r] = weightsOf(queues[r])
		}
		return qs
	}()
)

func weightsOf(ws []weighted) cumulative {
	is := make([]int, len(ws))
	for i, w := range ws {
		is[i] = w.w
	}
	return weights(is...)
}

// Models in the order they appear under "classifications".
const (
	modelContactReason = iota
	modelChurnRisk
	modelCompetitor
	modelSentiment
	numModels
)

// missingModelChance: per mille of records that lack one model entirely.
const missingModelChance = 80

type generator struct {
	r       *rand.Rand
	ts      time.Time
	row     int
	dataset []byte
	small   bool // Config.Small

	// The conversation the next record belongs to: its first row, the
	// customer, and how many more records it has.
	convFirst, convCustomer, convLeft int
}

func newGenerator(cfg Config) *generator {
	return &generator{
		r:       rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15)),
		ts:      cfg.Start.UTC(),
		row:     cfg.FirstRow,
		dataset: appendString(nil, cfg.DatasetID),
		small:   cfg.Small,
	}
}

// chance reports true with probability perMille/1000.
func (g *generator) chance(perMille int) bool { return g.r.IntN(1000) < perMille }

// between returns a confidence in hundredths, uniform in [lo, hi].
func (g *generator) between(lo, hi int) int { return lo + g.r.IntN(hi-lo+1) }

// confidence draws a typical model confidence: mostly high, some middling,
// a few below 0.5.
func (g *generator) confidence() int {
	switch x := g.r.IntN(1000); {
	case x < 70:
		return g.between(25, 49)
	case x < 200:
		return g.between(50, 71)
	default:
		return g.between(72, 99)
	}
}

// next appends one record and a newline to b.
func (g *generator) next(b []byte) []byte {
	r := g.r
	row := g.row
	g.row++
	ts := g.ts
	g.ts = g.ts.Add(time.Duration(1+r.IntN(40)) * time.Second)

	lang := sv
	if !g.chance(swedishShare) {
		lang = en
	}
	reason := reasonWeights.pick(r)
	prod := productWeights.pick(r)
	comp := -1
	if g.chance(competitorChance[reason]) {
		comp = competitorWeights.pick(r)
	}

	// churn_risk: a named competitor makes High likelier.
	high, medium := churn[reason][0], churn[reason][1]
	if comp >= 0 {
		high = min(high+200, 900)
		medium = min(medium, 1000-high)
	}
	churnLabel, churnConf := "Low", g.confidence()
	switch x := r.IntN(1000); {
	case x < high:
		churnLabel = "High"
		switch y := r.IntN(1000); {
		case y < 580:
			churnConf = g.between(81, 99)
		case y < 900:
			churnConf = g.between(50, 80)
		default:
			churnConf = g.between(30, 49)
		}
	case x < high+medium:
		churnLabel = "Medium"
	}

	sentLabel := "Positive"
	switch x := r.IntN(1000); {
	case x < sentiment[reason][0]:
		sentLabel = "Negative"
	case x < sentiment[reason][0]+sentiment[reason][1]:
		sentLabel = "Neutral"
	}

	// A classifier that is unsure is sometimes wrong.
	reasonConf := g.confidence()
	reasonLabel := reason
	if reasonConf < 50 && g.chance(500) {
		reasonLabel = (reason + 1 + r.IntN(numReasons-1)) % numReasons
	}

	compLabel, compConf := "None", g.between(85, 99)
	if comp >= 0 {
		compLabel = competitors[comp]
		compConf = g.confidence()
		if g.chance(850) {
			compConf = g.between(80, 99)
		}
	}

	missing := -1
	if g.chance(missingModelChance) {
		missing = r.IntN(numModels)
	}
	if g.small {
		return g.appendSmall(b, row, churnLabel, churnConf, 10000+r.IntN(90000), queues[reason][queueWeights[reason].pick(r)].s)
	}

	b = append(b, `{"event":"classification.completed","timestamp":"`...)
	b = ts.AppendFormat(b, time.RFC3339)
	b = append(b, `","dataset_id":`...)
	b = append(b, g.dataset...)
	b = append(b, `,"row_id":"row_`...)
	b = strconv.AppendInt(b, int64(row), 10)
	b = append(b, `","text":"`...)
	b = g.appendText(b, lang, reason, prod, comp)
	b = append(b, `","classifications":{`...)
	first := true
	model := func(m int, name, label string, conf int) {
		if m == missing {
			return
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":{"label":"`...)
		b = append(b, label...)
		b = append(b, `","confidence":`...)
		b = appendConfidence(b, conf)
		b = append(b, '}')
	}
	model(modelContactReason, "contact_reason", reasonLabels[reasonLabel], reasonConf)
	model(modelChurnRisk, "churn_risk", churnLabel, churnConf)
	model(modelCompetitor, "competitor_mention", compLabel, compConf)
	model(modelSentiment, "sentiment", sentLabel, g.confidence())
	b = append(b, `},"metadata":{"agent_id":"agent_`...)
	b = strconv.AppendInt(b, int64(4001+r.IntN(960)), 10)
	// A conversation is 1 to 4 consecutive records of one customer; its
	// length comes from its first row, not from r, so that every other
	// field stays as it was before conversations existed.
	customer := 10000 + r.IntN(90000)
	if g.convLeft == 0 {
		g.convFirst, g.convCustomer, g.convLeft = row, customer, 1+(row*7919)%4
	}
	g.convLeft--
	b = append(b, `","customer_id":"cust_`...)
	b = strconv.AppendInt(b, int64(g.convCustomer), 10)
	b = append(b, `","channel":"`...)
	b = append(b, channels[channelWeights.pick(r)].s...)
	b = append(b, `","queue":"`...)
	b = append(b, queues[reason][queueWeights[reason].pick(r)].s...)
	b = append(b, `","product":"`...)
	b = append(b, products[prod].id...)
	b = append(b, `","language":"`...)
	b = append(b, languages[lang]...)
	b = append(b, `","conversation_id":"conv_`...)
	b = strconv.AppendInt(b, int64(g.convFirst), 10)
	b = append(b, "\"}}\n"...)
	return b
}

// appendText appends the customer's utterance, already escaped, without
// quotes.
func (g *generator) appendText(b []byte, lang, reason, prod, comp int) []byte {
	r := g.r
	var pool []template
	switch {
	case comp >= 0:
		pool = tplCompetitor[lang][reason]
	case reason == technical:
		pool = tplTechnical[lang][products[prod].kind]
	default:
		pool = tplTexts[lang][reason]
	}
	for _, s := range pool[r.IntN(len(pool))] {
		switch s.v {
		case varNone:
			b = append(b, s.lit...)
		case varCompetitor:
			b = append(b, competitors[comp]...)
		case varProduct:
			b = append(b, escProducts[lang][prod]...)
		case varPrice:
			b = strconv.AppendInt(b, int64(199+10*r.IntN(51)), 10)
		case varCity:
			b = append(b, escCities[r.IntN(len(escCities))]...)
		case varMonth:
			b = append(b, escMonths[lang][r.IntN(12)]...)
		}
	}
	return b
}

// appendConfidence appends hundredths h (0..99) as a JSON number: 0.9, 0.05.
func appendConfidence(b []byte, h int) []byte {
	b = append(b, '0', '.', byte('0'+h/10))
	if h%10 != 0 {
		b = append(b, byte('0'+h%10))
	}
	return b
}

// appendSmall appends the small shape (~150 bytes): the record's id, its
// churn risk, its customer and queue, as DESIGN.md's performance notes
// measure.
func (g *generator) appendSmall(b []byte, row int, churn string, churnConf, customer int, queue string) []byte {
	b = append(b, `{"row_id":"row_`...)
	b = strconv.AppendInt(b, int64(row), 10)
	b = append(b, `","classifications":{"churn_risk":{"label":"`...)
	b = append(b, churn...)
	b = append(b, `","confidence":`...)
	b = appendConfidence(b, churnConf)
	b = append(b, `}},"metadata":{"customer_id":"cust_`...)
	b = strconv.AppendInt(b, int64(customer), 10)
	b = append(b, `","queue":"`...)
	b = append(b, queue...)
	b = append(b, "\"}}\n"...)
	return b
}
