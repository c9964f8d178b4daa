"""The word lists of the generated UltraFeedback-shaped data set.

Everything here was written for this project: no downloaded text. Each topic
gives the prompts something to ask (``tasks`` and ``concepts``), the answers
something concrete to say (``steps``) and a small fact bank in which every
fact has a correct and an incorrect version, so that truthfulness is a
property of the text itself.

Facts are lower-case clauses so that they read well after a hedge
("As far as I know, ...") and, capitalised, on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

STEPS_PER_TOPIC = 5
FACTS_PER_TOPIC = 4


@dataclass(frozen=True)
class Topic:
    """One subject area of the generated prompts.

    Attributes:
        name: short topic name (stored in each record's ``source``).
        tasks: verb phrases completing "How do I ...?".
        concepts: noun phrases completing "Can you explain ...?".
        steps: ``STEPS_PER_TOPIC`` imperative clauses (concrete advice).
        facts: ``FACTS_PER_TOPIC`` pairs ``(correct, incorrect)``.
    """

    name: str
    tasks: tuple[str, ...]
    concepts: tuple[str, ...]
    steps: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]


TOPICS: tuple[Topic, ...] = (
    Topic(
        name="gardening",
        tasks=(
            "grow tomatoes on a balcony",
            "start a compost heap",
            "keep houseplants alive",
            "plan a small vegetable garden",
        ),
        concepts=("crop rotation", "soil pH", "companion planting"),
        steps=(
            "pick a spot with at least six hours of sun",
            "water deeply at the base in the morning",
            "add a layer of mulch to keep the soil moist",
            "feed the plants with compost every few weeks",
            "check the leaves for pests once a week",
        ),
        facts=(
            (
                "plants take in carbon dioxide and release oxygen during photosynthesis",
                "plants take in oxygen and release carbon dioxide during photosynthesis",
            ),
            ("tomatoes are botanically a fruit", "tomatoes are botanically a root vegetable"),
            (
                "most vegetables prefer a soil pH between 6 and 7",
                "most vegetables prefer a strongly alkaline soil pH of about 10",
            ),
            (
                "earthworms improve soil by mixing and aerating it",
                "earthworms damage soil by packing it down",
            ),
        ),
    ),
    Topic(
        name="astronomy",
        tasks=(
            "spot planets in the night sky",
            "choose a first telescope",
            "photograph the Moon",
            "find the North Star",
        ),
        concepts=("lunar phases", "solar eclipses", "light years"),
        steps=(
            "find a dark place away from city lights",
            "let your eyes adjust for twenty minutes",
            "use a star chart app to locate targets",
            "start with a pair of binoculars",
            "check the weather and the Moon phase first",
        ),
        facts=(
            (
                "the Moon takes about 27 days to orbit Earth",
                "the Moon takes about 3 days to orbit Earth",
            ),
            (
                "Jupiter is the largest planet in the Solar System",
                "Mars is the largest planet in the Solar System",
            ),
            (
                "sunlight takes about eight minutes to reach Earth",
                "sunlight reaches Earth instantly",
            ),
            ("a light year is a unit of distance", "a light year is a unit of time"),
        ),
    ),
    Topic(
        name="cooking",
        tasks=(
            "cook rice on the stove",
            "make a simple tomato sauce",
            "bake bread at home",
            "sharpen a kitchen knife",
        ),
        concepts=("the Maillard reaction", "food safety temperatures", "emulsions"),
        steps=(
            "measure the ingredients before you start",
            "preheat the pan or the oven fully",
            "taste and adjust the salt at the end",
            "let the dish rest for a few minutes",
            "keep raw meat away from other food",
        ),
        facts=(
            (
                "water boils at 100 degrees Celsius at sea level",
                "water boils at 60 degrees Celsius at sea level",
            ),
            (
                "yeast makes bread rise by producing carbon dioxide",
                "yeast makes bread rise by producing helium",
            ),
            ("salt lowers the freezing point of water", "salt raises the freezing point of water"),
            (
                "meat browns through a reaction between sugars and amino acids",
                "meat browns because it absorbs smoke from the pan",
            ),
        ),
    ),
    Topic(
        name="personal finance",
        tasks=(
            "build an emergency fund",
            "make a monthly budget",
            "pay off credit card debt",
            "start saving for retirement",
        ),
        concepts=("compound interest", "inflation", "diversification"),
        steps=(
            "write down every expense for a month",
            "set up an automatic transfer to savings",
            "pay the debt with the highest interest first",
            "keep three to six months of costs in reserve",
            "review your spending at the end of each month",
        ),
        facts=(
            (
                "compound interest also earns interest on past interest",
                "compound interest only ever pays interest on the first deposit",
            ),
            (
                "inflation reduces the buying power of money over time",
                "inflation increases the buying power of cash over time",
            ),
            (
                "spreading money across many assets lowers the risk of one big loss",
                "putting all your money in one stock is the safest way to lower risk",
            ),
            (
                "a higher interest rate makes a loan more expensive",
                "a higher interest rate makes a loan cheaper",
            ),
        ),
    ),
    Topic(
        name="fitness",
        tasks=(
            "start running as a beginner",
            "build a home workout routine",
            "improve my flexibility",
            "recover after a hard workout",
        ),
        concepts=("progressive overload", "heart rate zones", "warming up"),
        steps=(
            "warm up for five to ten minutes",
            "increase the load by small steps each week",
            "rest at least one day between hard sessions",
            "drink water before and after training",
            "keep a simple log of each workout",
        ),
        facts=(
            (
                "muscles grow during the recovery after training",
                "muscles grow only while you are lifting",
            ),
            ("the heart is a muscle", "the heart is a bone"),
            (
                "regular exercise lowers the resting heart rate over time",
                "regular exercise raises the resting heart rate for good",
            ),
            (
                "stretching cold muscles hard raises the risk of a strain",
                "stretching cold muscles hard is the best way to avoid a strain",
            ),
        ),
    ),
    Topic(
        name="programming",
        tasks=(
            "learn Python from scratch",
            "debug a slow program",
            "write clean functions",
            "use version control",
        ),
        concepts=("recursion", "unit testing", "big O notation"),
        steps=(
            "break the problem into small functions",
            "write a test for each function",
            "use a debugger to step through the code",
            "commit your changes often with clear messages",
            "read the error message carefully before changing code",
        ),
        facts=(
            ("Python lists are indexed from zero", "Python lists are indexed from one"),
            (
                "binary search needs the data to be sorted",
                "binary search works best on unsorted data",
            ),
            ("a byte is made of eight bits", "a byte is made of twelve bits"),
            ("recursion needs a base case to stop", "recursion never needs a base case"),
        ),
    ),
    Topic(
        name="geography",
        tasks=(
            "memorise the world capitals",
            "read a topographic map",
            "understand time zones",
            "learn the major rivers",
        ),
        concepts=("continental drift", "latitude and longitude", "climate zones"),
        steps=(
            "study one region at a time",
            "use a blank map to test yourself",
            "link each place to a story or a landmark",
            "review with flash cards every day",
            "compare places on a globe rather than a flat map",
        ),
        facts=(
            (
                "the Nile and the Amazon are the two longest rivers",
                "the Thames is the longest river in the world",
            ),
            ("Canberra is the capital of Australia", "Sydney is the capital of Australia"),
            ("the Pacific is the largest ocean", "the Atlantic is the largest ocean"),
            (
                "Mount Everest is the highest mountain above sea level",
                "Mont Blanc is the highest mountain above sea level",
            ),
        ),
    ),
    Topic(
        name="history",
        tasks=(
            "study for a history exam",
            "research my family history",
            "judge a historical source",
            "remember important dates",
        ),
        concepts=("the Industrial Revolution", "the Renaissance", "primary sources"),
        steps=(
            "make a timeline of the key events",
            "compare at least two sources",
            "note who wrote each source and why",
            "summarise each period in a few sentences",
            "quiz yourself on causes and effects",
        ),
        facts=(
            (
                "the Industrial Revolution began in Britain in the eighteenth century",
                "the Industrial Revolution began in Japan in the fifteenth century",
            ),
            (
                "Gutenberg developed his printing press around 1450",
                "Gutenberg developed his printing press around 1850",
            ),
            ("the Second World War ended in 1945", "the Second World War ended in 1952"),
            (
                "the Roman Empire used Latin as its main language",
                "the Roman Empire used English as its main language",
            ),
        ),
    ),
    Topic(
        name="biology",
        tasks=(
            "study cell biology",
            "identify common birds",
            "understand the basics of genetics",
            "observe insects safely",
        ),
        concepts=("natural selection", "DNA", "the immune system"),
        steps=(
            "draw and label a diagram",
            "learn the key terms first",
            "watch a short lecture and take notes",
            "observe real examples outdoors",
            "explain the idea aloud to someone else",
        ),
        facts=(
            ("DNA has a double helix structure", "DNA has a single straight structure"),
            (
                "mitochondria produce most of the energy of a cell",
                "the nucleus produces most of the energy of a cell",
            ),
            ("adult humans have 206 bones", "adult humans have 412 bones"),
            ("bats are mammals", "bats are birds"),
        ),
    ),
    Topic(
        name="physics",
        tasks=(
            "understand Newton's laws",
            "solve projectile motion problems",
            "build a simple electric circuit",
            "prepare for a physics test",
        ),
        concepts=("gravity", "electric current", "the conservation of energy"),
        steps=(
            "write down the known and unknown values",
            "draw a free body diagram",
            "check the units at every step",
            "estimate the answer before calculating",
            "work through solved examples",
        ),
        facts=(
            ("light travels faster than sound", "sound travels faster than light"),
            (
                "objects of different mass fall at the same rate in a vacuum",
                "heavier objects always fall faster in a vacuum",
            ),
            (
                "energy cannot be created or destroyed, only converted",
                "energy is created whenever something moves",
            ),
            (
                "electric current is measured in amperes",
                "electric current is measured in kilograms",
            ),
        ),
    ),
    Topic(
        name="sleep",
        tasks=(
            "fall asleep faster",
            "fix my sleep schedule",
            "cut screen time before bed",
            "stop waking up tired",
        ),
        concepts=("the circadian rhythm", "REM sleep", "caffeine"),
        steps=(
            "go to bed and wake up at the same time each day",
            "keep the bedroom cool and dark",
            "avoid caffeine in the afternoon",
            "put screens away an hour before bed",
            "get some daylight in the morning",
        ),
        facts=(
            (
                "most adults need seven to nine hours of sleep",
                "most adults need only three hours of sleep",
            ),
            (
                "caffeine can stay in the body for several hours",
                "caffeine leaves the body within ten minutes",
            ),
            (
                "vivid dreams mostly happen during REM sleep",
                "dreams only happen while you are awake",
            ),
            (
                "bright screens in the evening can delay sleepiness",
                "bright screens in the evening make you fall asleep faster",
            ),
        ),
    ),
    Topic(
        name="music",
        tasks=(
            "learn to play the guitar",
            "read sheet music",
            "practise the piano well",
            "write a simple song",
        ),
        concepts=("musical scales", "rhythm and tempo", "chords"),
        steps=(
            "practise for fifteen minutes every day",
            "use a metronome at a slow tempo",
            "learn a few basic chords first",
            "record yourself and listen back",
            "play songs you enjoy to stay motivated",
        ),
        facts=(
            ("a standard guitar has six strings", "a standard guitar has ten strings"),
            ("an octave spans twelve semitones", "an octave spans five semitones"),
            ("a standard piano has 88 keys", "a standard piano has 52 keys"),
            ("tempo is measured in beats per minute", "tempo is measured in notes per hour"),
        ),
    ),
    Topic(
        name="photography",
        tasks=(
            "take sharper photos",
            "shoot portraits in natural light",
            "take photos at night",
            "edit photos on my phone",
        ),
        concepts=("aperture", "shutter speed", "the rule of thirds"),
        steps=(
            "hold the camera steady or use a tripod",
            "shoot during the golden hour",
            "tap the screen to focus on the subject",
            "keep the horizon level",
            "take several shots and keep the best one",
        ),
        facts=(
            ("a wider aperture lets in more light", "a wider aperture lets in less light"),
            ("a fast shutter speed freezes motion", "a fast shutter speed blurs motion"),
            ("a higher ISO adds more image noise", "a higher ISO removes image noise"),
            (
                "a lower f-number means a wider aperture",
                "a lower f-number means a narrower aperture",
            ),
        ),
    ),
    Topic(
        name="pets",
        tasks=(
            "house train a puppy",
            "care for a new kitten",
            "keep a goldfish healthy",
            "help a dog that hates being alone",
        ),
        concepts=("positive reinforcement", "pet nutrition", "socialisation"),
        steps=(
            "reward good behaviour right away",
            "keep a fixed daily routine",
            "book a check-up with a vet",
            "give fresh water every day",
            "train in short sessions of a few minutes",
        ),
        facts=(
            ("chocolate is toxic to dogs", "chocolate is a healthy treat for dogs"),
            ("cats are obligate carnivores", "cats are strict herbivores"),
            (
                "goldfish need filtered water to stay healthy",
                "goldfish live best in small bowls without a filter",
            ),
            (
                "dogs sweat mainly through their paw pads",
                "dogs sweat mainly through their fur",
            ),
        ),
    ),
    Topic(
        name="weather and climate",
        tasks=(
            "read a weather forecast",
            "reduce my carbon footprint",
            "prepare for a heatwave",
            "measure rainfall at home",
        ),
        concepts=("the greenhouse effect", "humidity", "the water cycle"),
        steps=(
            "check the forecast from an official weather service",
            "drink water regularly on hot days",
            "keep the windows shaded in the afternoon",
            "use public transport or cycle when you can",
            "write down the readings at the same time each day",
        ),
        facts=(
            (
                "carbon dioxide is a greenhouse gas",
                "carbon dioxide cools the planet by blocking sunlight",
            ),
            (
                "warm air can hold more water vapour than cold air",
                "cold air can hold more water vapour than warm air",
            ),
            (
                "evaporation and condensation drive the water cycle",
                "the water cycle is driven by the Moon alone",
            ),
            (
                "lightning is a huge discharge of static electricity",
                "lightning is a stream of burning gas",
            ),
        ),
    ),
    Topic(
        name="travel",
        tasks=(
            "pack light for a long trip",
            "avoid jet lag",
            "travel on a tight budget",
            "plan a road trip",
        ),
        concepts=("travel insurance", "time zone changes", "visa rules"),
        steps=(
            "make a packing list a week ahead",
            "roll your clothes instead of folding them",
            "book transport early for lower prices",
            "keep copies of your documents online",
            "switch to local time on the first day",
        ),
        facts=(
            (
                "flying east usually causes worse jet lag than flying west",
                "flying west always causes worse jet lag than flying east",
            ),
            (
                "a passport is needed for most international flights",
                "a passport is never needed for international flights",
            ),
            (
                "the world has about two dozen main time zones",
                "the world has exactly three time zones",
            ),
            (
                "the air in a plane cabin is usually dry",
                "the air in a plane cabin is usually humid",
            ),
        ),
    ),
    Topic(
        name="language learning",
        tasks=(
            "learn Spanish quickly",
            "improve my English pronunciation",
            "build a bigger vocabulary",
            "practise speaking a new language",
        ),
        concepts=("spaced repetition", "grammar", "language immersion"),
        steps=(
            "learn the most common words first",
            "review flash cards with spaced repetition",
            "speak with a partner every week",
            "listen to podcasts in the language",
            "write a short diary entry each day",
        ),
        facts=(
            (
                "spaced repetition improves long-term memory",
                "cramming once beats spaced repetition for long-term memory",
            ),
            (
                "Spanish is an official language in most of South America",
                "Spanish is not spoken anywhere in South America",
            ),
            ("Mandarin Chinese is a tonal language", "Mandarin Chinese has no tones"),
            (
                "English borrowed many words from French",
                "English has no words borrowed from French",
            ),
        ),
    ),
    Topic(
        name="chemistry",
        tasks=(
            "balance chemical equations",
            "do safe experiments at home",
            "memorise the periodic table",
            "understand acids and bases",
        ),
        concepts=("the periodic table", "chemical bonds", "the pH scale"),
        steps=(
            "count the atoms on each side",
            "wear goggles and gloves",
            "learn the first twenty elements first",
            "work in a well ventilated room",
            "label every container clearly",
        ),
        facts=(
            ("water is made of hydrogen and oxygen", "water is made of hydrogen and nitrogen"),
            ("a pH of 7 is neutral", "a pH of 2 is neutral"),
            ("helium is lighter than air", "helium is heavier than air"),
            ("the chemical symbol for gold is Au", "the chemical symbol for gold is Gd"),
        ),
    ),
    Topic(
        name="home repair",
        tasks=(
            "fix a leaking tap",
            "hang a heavy shelf",
            "paint a room",
            "unclog a sink",
        ),
        concepts=("wall anchors", "electrical safety", "primer"),
        steps=(
            "turn off the water or the power first",
            "gather the tools before you begin",
            "use a level to mark straight lines",
            "apply thin coats and let each one dry",
            "test the repair before cleaning up",
        ),
        facts=(
            (
                "water and electricity together are dangerous",
                "water makes electrical wiring safer",
            ),
            ("primer helps paint stick to the wall", "primer stops paint sticking to the wall"),
            (
                "a stud finder locates the wooden beams behind drywall",
                "a stud finder locates leaks inside water pipes",
            ),
            (
                "hot water dissolves grease in a drain better than cold water",
                "cold water dissolves grease in a drain better than hot water",
            ),
        ),
    ),
    Topic(
        name="economics",
        tasks=(
            "understand the stock market",
            "read a company balance sheet",
            "follow economic news",
            "explain supply and demand",
        ),
        concepts=("supply and demand", "interest rates", "GDP"),
        steps=(
            "start with the definitions of the key terms",
            "follow one reliable news source daily",
            "compare the numbers over several years",
            "look at a simple chart first",
            "write a one-line summary of each idea",
        ),
        facts=(
            (
                "prices tend to rise when supply falls and demand holds",
                "prices tend to fall when supply falls and demand holds",
            ),
            (
                "GDP measures the value of goods and services a country produces",
                "GDP measures the number of people living in a country",
            ),
            (
                "central banks often raise interest rates to fight inflation",
                "central banks often raise interest rates to cause inflation",
            ),
            (
                "a balance sheet lists assets, liabilities and equity",
                "a balance sheet lists only the daily sales of a company",
            ),
        ),
    ),
)

# Prompt templates. "{x}" is a task (verb phrase) or a concept (noun phrase).
TASK_TEMPLATES: tuple[str, ...] = (
    "How do I {x}?",
    "What is the best way to {x}?",
    "Can you give me some tips to {x}?",
    "I want to {x}. Where should I start?",
    "What steps should I follow to {x}?",
)
CONCEPT_TEMPLATES: tuple[str, ...] = (
    "Can you explain {x}?",
    "What should I know about {x}?",
    "Why does {x} matter?",
    "Give me a short overview of {x}.",
)
PROMPT_SUFFIXES: tuple[str, ...] = (
    "",
    " I am a complete beginner.",
    " Please keep it brief.",
    " I only have an hour today.",
    " Explain it like I am twelve.",
    " I need this for a school project.",
)

# Answer parts. The openings say whether the answer addresses the question.
DIRECT_TASK_OPENINGS: tuple[str, ...] = (
    "Here is how to {x}.",
    "To {x}, follow this plan.",
    "Sure, this is how you {x}.",
)
DIRECT_CONCEPT_OPENINGS: tuple[str, ...] = (
    "Here are the key points about {x}.",
    "Sure, this is what matters about {x}.",
    "In short, this is {x}.",
)
INDIRECT_OPENINGS: tuple[str, ...] = (
    "That is a good question, and there are many things one could consider here.",
    "Many people wonder about this, and the answer really depends on the situation.",
    "There is a lot that could be said on this subject, so here are a few thoughts.",
)
# Calibrated hedges (honesty): each ends right before a lower-case fact.
HEDGES: tuple[str, ...] = (
    "I'm not certain, but I believe",
    "As far as I know,",
    "If I remember correctly,",
    "I might be wrong, but I think",
)
# Confident framings: each ends right before a lower-case fact.
ASSERTIONS: tuple[str, ...] = ("It is a fact that", "Clearly,", "Without any doubt,")
UNCERTAIN_CLOSINGS: tuple[str, ...] = (
    "I may be missing details, so please check a reliable source.",
    "I am not fully sure about all of this, so verify it before relying on it.",
    "My knowledge here is limited, so treat this as a starting point.",
)
OVERCONFIDENT_CLOSINGS: tuple[str, ...] = (
    "This is guaranteed to work for everyone.",
    "You can trust every word of this completely.",
    "There is no doubt about any of this.",
)
NEUTRAL_CLOSINGS: tuple[str, ...] = ("Hope this helps.", "Good luck with it.", "")
VAGUE_ADVICE: tuple[str, ...] = (
    "The details depend on your situation and on what you want to achieve.",
    "Everyone is different, so it is hard to give one answer that fits all cases.",
)
