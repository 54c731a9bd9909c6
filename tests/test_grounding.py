"""The grounding check (`generation.grounding`) and its use by the Studio's checks (`generation.safety`).

An ad may state only what the catalog row (title, year, categories, description) and the brand kit
support. These tests hold the check to that on two corpora over real MovieLens-100k rows: invented
claims (sequels, people, awards, prices, rankings, numbers, wrong years, quotations) that must be
rejected with a reason naming the offending words, and grounded copy that must pass with no reason at
all, so the check neither lets a made-up fact through nor rejects honest copy. No models are loaded.
"""

from __future__ import annotations

import pytest

from generation import grounding, safety
from generation.copy import display_name

CATEGORIES = ["Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
              "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
              "Western"]
OTHER_TITLES = ["The Empire Strikes Back", "Return of the Jedi", "Fargo", "Toy Story", "The Edge"]
BRAND_KIT = {"name": "AdLoop Cinema", "banned_words": ["free"], "default_cta": "Watch now",
             "required_disclaimer": "Subscription required. Terms apply."}

STAR_WARS = {"item_id": "50", "title": "Star Wars (1977)", "year": 1977,
             "category": "Action|Adventure|Romance|Sci-Fi|War"}
STAR_WARS_DESCRIBED = {**STAR_WARS,
                       "description": "A farmer's son joins a rebellion against the Galactic Empire to rescue a "
                                      "princess."}
TOY_STORY = {"item_id": "1", "title": "Toy Story (1995)", "year": 1995, "category": "Animation|Children's|Comedy"}
TOY_STORY_DESCRIBED = {**TOY_STORY,
                       "description": "Woody, a cowboy doll, feels threatened when Buzz Lightyear, a spaceman toy, "
                                      "arrives in the bedroom."}
USUAL_SUSPECTS = {"item_id": "12", "title": "Usual Suspects, The (1995)", "year": 1995, "category": "Crime|Thriller"}
SPACE_ODYSSEY = {"item_id": "135", "title": "2001: A Space Odyssey (1968)", "year": 1968,
                 "category": "Drama|Mystery|Sci-Fi|Thriller"}
SE7EN = {"item_id": "11", "title": "Se7en (1995)", "year": 1995, "category": "Crime|Thriller"}
FARGO = {"item_id": "100", "title": "Fargo (1996)", "year": 1996, "category": "Crime|Drama|Thriller"}
CHINATOWN = {"item_id": "654", "title": "Chinatown (1974)", "year": 1974, "category": "Film-Noir|Mystery|Thriller"}
TERMINATOR_2 = {"item_id": "96", "title": "Terminator 2: Judgment Day (1991)", "year": 1991,
                "category": "Action|Sci-Fi|Thriller"}
APOLLO_13 = {"item_id": "28", "title": "Apollo 13 (1995)", "year": 1995, "category": "Action|Drama|Thriller"}
GODFATHER = {"item_id": "127", "title": "Godfather, The (1972)", "year": 1972, "category": "Action|Crime|Drama"}
KIDS = {"item_id": "772", "title": "Kids (1995)", "year": 1995, "category": "Drama"}
WIZARD_OF_OZ = {"item_id": "132", "title": "Wizard of Oz, The (1939)", "year": 1939,
                "category": "Adventure|Children's|Drama|Musical"}
LA_CONFIDENTIAL = {"item_id": "302", "title": "L.A. Confidential (1997)", "year": 1997,
                   "category": "Crime|Film-Noir|Mystery|Thriller"}
MALTESE_FALCON = {"item_id": "484", "title": "Maltese Falcon, The (1941)", "year": 1941,
                  "category": "Film-Noir|Mystery"}
BLADE_RUNNER = {"item_id": "89", "title": "Blade Runner (1982)", "year": 1982, "category": "Film-Noir|Sci-Fi"}
HOLY_GRAIL = {"item_id": "168", "title": "Monty Python and the Holy Grail (1974)", "year": 1974, "category": "Comedy"}
SEVEN = {"item_id": "11", "title": "Seven (Se7en) (1995)", "year": 1995, "category": "Crime|Thriller"}
OSCAR_AND_LUCINDA = {"item_id": "906", "title": "Oscar & Lucinda (1997)", "year": 1997, "category": "Drama|Romance"}
BEST_FRIENDS_WEDDING = {"item_id": "255", "title": "My Best Friend's Wedding (1997)", "year": 1997,
                        "category": "Comedy|Romance"}
RUMBLE = {"item_id": "24", "title": "Rumble in the Bronx (1995)", "year": 1995, "category": "Action|Adventure|Crime"}
WONKA = {"item_id": "151", "title": "Willy Wonka and the Chocolate Factory (1971)", "year": 1971,
         "category": "Adventure|Children's|Comedy|Musical"}
TIFFANYS = {"item_id": "131", "title": "Breakfast at Tiffany's (1961)", "year": 1961, "category": "Drama|Romance"}
STAR_TREK = {"item_id": "380", "title": "Star Trek: Generations (1994)", "year": 1994,
             "category": "Action|Adventure|Sci-Fi"}
RED_OCTOBER = {"item_id": "265", "title": "Hunt for Red October, The (1990)", "year": 1990,
               "category": "Action|Thriller"}
TWELVE_MONKEYS = {"item_id": "7", "title": "Twelve Monkeys (1995)", "year": 1995, "category": "Drama|Sci-Fi"}
EMPIRE = {"item_id": "172", "title": "Empire Strikes Back, The (1980)", "year": 1980,
          "category": "Action|Adventure|Drama|Romance|Sci-Fi|War"}
DEAD_MAN_WALKING = {"item_id": "9", "title": "Dead Man Walking (1995)", "year": 1995, "category": "Drama"}
UNFORGIVEN = {"item_id": "203", "title": "Unforgiven (1992)", "year": 1992, "category": "Western"}


def ad(title: str, body: str, cta: str = "Watch now") -> dict[str, str]:
    return {"title": title, "body": body, "cta": cta}


def check(copy: dict[str, str], item: dict) -> safety.Verdict:
    return safety.check(copy, item, CATEGORIES, OTHER_TITLES, BRAND_KIT)


def problems(copy: dict[str, str], item: dict, brand_kit: dict | None = BRAND_KIT) -> list[str]:
    return grounding.problems(copy, grounding.facts_for(item, brand_kit))


def invented(group: str, name: str, item: dict, title: str, body: str, offending: str, cta: str = "Watch now"):
    return pytest.param(item, ad(title, body, cta), offending, id=f"{group}-{name}")


# Each case names its item (so the rejection is for the claim) and is otherwise true to the catalog;
# `offending` is the text a reason must name. Bare numbers are given in quotes, as the reason quotes them.
INVENTED = [
    # sequels, subtitles and parts the catalog does not have
    invented("sequel", "force-awakens", STAR_WARS, "Star Wars: The Force Awakens", "A sci-fi adventure from 1977.",
             "Force Awakens"),
    invented("sequel", "new-hope", STAR_WARS, "Star Wars: A New Hope", "Action and romance among the stars.",
             "New Hope"),
    invented("sequel", "daleks", STAR_WARS, "Star Wars: The Rise of the Daleks", "A sci-fi adventure.",
             "Rise of the Daleks"),
    invented("sequel", "return-of-woody", TOY_STORY, "Toy Story: Return of Woody", "A 1995 animated comedy.",
             "Return of Woody"),
    invented("sequel", "clone-wars", STAR_WARS, "Star Wars: The Clone Wars", "Sci-fi action and war.", "Clone Wars"),
    invented("sequel", "part-two", GODFATHER, "The Godfather Part II", "A 1972 crime drama.", "Part II"),
    invented("sequel", "final-cut", BLADE_RUNNER, "Blade Runner: The Final Cut", "A 1982 sci-fi noir.", "Final Cut"),
    invented("sequel", "machines", TERMINATOR_2, "Terminator 2: Rise of the Machines", "Sci-fi action.",
             "Rise of the Machines"),
    invented("sequel", "toy-story-4", TOY_STORY, "Toy Story 4", "An animated comedy for kids.", "'4'"),
    invented("sequel", "lost-star", STAR_WARS, "Star Wars: The Lost Star", "A sci-fi adventure.", "Lost Star"),
    invented("sequel", "part-of-the-name-and-more", WONKA, "Willy Wonka and the Chocolate Factory: The Chocolate "
             "Return", "A 1971 musical.", "Chocolate Return"),
    # actors, directors and characters
    invented("person", "hyphenated", STAR_WARS, "Star Wars", "Join Star-Lord on a sci-fi adventure.", "Star-Lord"),
    invented("person", "harrison-ford", STAR_WARS, "Star Wars", "Harrison Ford stars in this 1977 sci-fi adventure.",
             "Harrison Ford"),
    invented("person", "spielberg", STAR_WARS, "Star Wars", "A sci-fi adventure directed by Steven Spielberg.",
             "Steven Spielberg"),
    invented("person", "luke-skywalker", STAR_WARS, "Star Wars", "Join Luke Skywalker on a sci-fi adventure.",
             "Luke Skywalker"),
    invented("person", "skywalker-despite-description", STAR_WARS_DESCRIBED, "Star Wars",
             "Join Luke Skywalker against the Galactic Empire.", "Luke Skywalker"),
    invented("person", "darth-vader", STAR_WARS, "Star Wars", "Face Darth Vader in a galaxy at war.", "Darth Vader"),
    invented("person", "tom-hanks", TOY_STORY, "Toy Story", "Tom Hanks voices a cowboy toy in this comedy.",
             "Tom Hanks"),
    invented("person", "kevin-spacey", USUAL_SUSPECTS, "The Usual Suspects",
             "Kevin Spacey is unforgettable in this crime thriller.", "Kevin Spacey"),
    invented("person", "mcdormand", FARGO, "Fargo", "Frances McDormand stars in this crime drama.",
             "Frances McDormand"),
    invented("person", "morgan-freeman", SE7EN, "Se7en", "Brad Pitt and Morgan Freeman hunt a killer.",
             "Morgan Freeman"),
    invented("person", "bogart", MALTESE_FALCON, "The Maltese Falcon", "Humphrey Bogart stars in this mystery.",
             "Humphrey Bogart"),
    invented("person", "dorothy", WIZARD_OF_OZ, "The Wizard of Oz", "Dorothy and Toto follow the road home.",
             "Dorothy"),
    # awards
    invented("award", "oscar-winning", STAR_WARS, "Star Wars", "An Oscar-winning sci-fi adventure.", "Oscar-winning"),
    invented("award", "academy-awards", STAR_WARS, "Star Wars", "Winner of 3 Academy Awards.", "Academy Awards"),
    invented("award", "golden-globe", FARGO, "Fargo", "A Golden Globe nominee from 1996.", "Golden Globe"),
    invented("award", "award-winning", TOY_STORY, "Toy Story", "An award-winning animated comedy.", "award-winning"),
    invented("award", "four-oscars", SPACE_ODYSSEY, "2001: A Space Odyssey", "Nominated for four Oscars.", "Oscars"),
    invented("award", "acclaimed", USUAL_SUSPECTS, "The Usual Suspects", "A critically acclaimed crime thriller.",
             "critically acclaimed"),
    invented("award", "emmy-winning", CHINATOWN, "Chinatown", "An Emmy-winning film-noir mystery.", "Emmy-winning"),
    invented("award", "bafta-nominee", GODFATHER, "The Godfather", "A BAFTA nominee from 1972.", "BAFTA"),
    invented("award", "lowercase-nominated", STAR_WARS, "Star Wars", "An oscar-nominated sci-fi adventure.", "oscar"),
    invented("award", "multi-award", STAR_WARS, "Star Wars", "A multi-award-winning sci-fi adventure.",
             "award-winning"),
    invented("award", "title-word", OSCAR_AND_LUCINDA, "Oscar & Lucinda", "An Oscar-winning romance from 1997.",
             "Oscar-winning"),
    # prices and offers
    invented("price", "dollars", STAR_WARS, "Star Wars", "A sci-fi adventure for only $9.99.", "$9.99"),
    invented("price", "pounds-a-month", TOY_STORY, "Toy Story", "Stream it for £5 a month.", "£5"),
    invented("price", "percent-off", FARGO, "Fargo", "50% off this weekend.", "50%"),
    invented("price", "euros", USUAL_SUSPECTS, "The Usual Suspects", "Rent it for €3 tonight.", "€3"),
    invented("price", "tickets-from", SE7EN, "Se7en", "Tickets from $12.", "$12", cta="Book tickets"),
    invented("price", "pence", CHINATOWN, "Chinatown", "Just 99p to rent.", "99p"),
    # rankings and superlatives
    invented("ranking", "hash-one", STAR_WARS, "Star Wars", "The #1 film in the galaxy.", "#1"),
    invented("ranking", "best-of-year", STAR_WARS, "Star Wars", "The best movie of the year.", "best"),
    invented("ranking", "greatest", TOY_STORY, "Toy Story", "The greatest comedy of all time.", "greatest"),
    invented("series", "trilogy", STAR_WARS, "Star Wars", "A romantic 1977 epic, the epic trilogy.", "trilogy"),
    invented("series", "sequel", EMPIRE, "The Empire Strikes Back", "The 1980 sequel, a war drama.", "sequel"),
    invented("series", "original-series", EMPIRE, "The Empire Strikes Back", "A 1980s romance for fans of the "
             "original series.", "series"),
    invented("series", "franchise", TOY_STORY, "Toy Story", "The comedy that started a franchise.", "franchise"),
    invented("series", "of-the-series", STAR_TREK, "Star Trek: Generations", "A fun 1994 ride for fans of the "
             "original Star Trek series.", "series"),
    invented("ranking", "fan-favorite", STAR_WARS, "Star Wars", "A fan favorite of classic sci-fi.", "fan favorite"),
    invented("ranking", "big-hit", RED_OCTOBER, "The Hunt for Red October", "A classic 1990 thriller, a big hit.",
             "big hit"),
    invented("ranking", "iconic", STAR_WARS, "Star Wars, the iconic epic", "Rebels take on an empire.", "iconic"),
    invented("ranking", "cult-hit", TOY_STORY, "Toy Story, a cult hit", "A 1995 animated comedy.", "cult hit"),
    invented("ranking", "of-all-time", TWELVE_MONKEYS, "Twelve Monkeys", "A sci-fi drama of all time.",
             "of all time"),
    invented("ranking", "top-rated", FARGO, "Fargo", "A top-rated crime drama.", "top-rated"),
    invented("ranking", "number-one", USUAL_SUSPECTS, "The Usual Suspects", "The number one crime thriller.",
             "number one"),
    invented("ranking", "finest", SE7EN, "Se7en", "The finest thriller ever made.", "finest"),
    invented("ranking", "blockbuster", CHINATOWN, "Chinatown", "A blockbuster mystery.", "blockbuster"),
    invented("ranking", "most-popular", SPACE_ODYSSEY, "2001: A Space Odyssey", "The most popular sci-fi drama.",
             "most popular"),
    invented("ranking", "best-selling", STAR_WARS, "Star Wars", "A best-selling sci-fi classic.", "best-selling"),
    invented("ranking", "best-loved", STAR_WARS, "Star Wars", "The best-loved sci-fi adventure.", "best-loved"),
    invented("ranking", "highest-grossing", STAR_WARS, "Star Wars", "The highest-grossing film of 1977.",
             "highest-grossing"),
    invented("ranking", "biggest", STAR_WARS, "Star Wars", "The biggest film of 1977.", "biggest"),
    invented("ranking", "five-star", STAR_WARS, "Star Wars", "A five-star sci-fi adventure.", "five-star"),
    invented("ranking", "most-watched", STAR_WARS, "Star Wars", "The most-watched film in history.", "most-watched"),
    invented("ranking", "top-ten", STAR_WARS, "Star Wars", "A top ten classic.", "top ten"),
    invented("ranking", "must-see", STAR_WARS, "Star Wars", "A must-see smash hit.", "must-see"),
    invented("ranking", "ultimate", STAR_WARS, "Star Wars", "The ultimate sci-fi adventure.", "ultimate"),
    invented("ranking", "title-word", BEST_FRIENDS_WEDDING, "My Best Friend's Wedding", "The best romance of 1997.",
             "best"),
    invented("ranking", "funniest", TOY_STORY, "Toy Story", "The funniest comedy for kids.", "funniest"),
    invented("ranking", "coolest", STAR_WARS, "Star Wars", "The coolest ride among the stars.", "coolest"),
    invented("ranking", "most-gripping", FARGO, "Fargo", "The most gripping crime drama.", "most gripping"),
    invented("ranking", "latest", STAR_WARS, "Star Wars", "The latest sci-fi adventure.", "latest"),
    invented("award", "winner", FARGO, "Fargo", "A two-time winner of crime drama.", "winner"),
    # numbers the catalog does not give
    invented("number", "spelled-out", STAR_WARS, "Star Wars", "Over a hundred million fans.", "hundred"),
    invented("number", "digit-of-the-title", SE7EN, "Se7en", "A thriller with 7 stars.", "'7'"),
    invented("number", "ten-of-ten", STAR_WARS, "Star Wars", "Rated 10/10 by fans.", "10/10"),
    invented("number", "four-stars", TOY_STORY, "Toy Story", "4 stars from the critics.", "'4'"),
    invented("number", "two-hours", FARGO, "Fargo", "2 hours of crime drama.", "'2'"),
    invented("number", "million-fans", STAR_WARS, "Star Wars", "Over 100 million fans.", "'100'"),
    invented("number", "runtime", SPACE_ODYSSEY, "2001: A Space Odyssey", "A 160-minute journey.", "160"),
    invented("number", "suspects", USUAL_SUSPECTS, "The Usual Suspects", "5 suspects, 1 lineup.", "'5'"),
    invented("number", "apollo-11", APOLLO_13, "Apollo 13", "Before Apollo 11, a 1995 drama.", "'11'"),
    # wrong years
    invented("year", "star-wars-1980", STAR_WARS, "Star Wars (1980)", "A sci-fi adventure.", "1980"),
    invented("year", "toy-story-1996", TOY_STORY, "Toy Story", "The 1996 comedy for kids.", "1996"),
    invented("year", "fargo-1995", FARGO, "Fargo", "A 1995 crime drama.", "1995"),
    invented("year", "suspects-1994", USUAL_SUSPECTS, "The Usual Suspects", "A 1994 crime thriller.", "1994"),
    invented("year", "odyssey-1969", SPACE_ODYSSEY, "2001: A Space Odyssey", "The 1969 sci-fi classic.", "1969"),
    invented("year", "chinatown-1947", CHINATOWN, "Chinatown", "A 1947 mystery.", "1947"),
    invented("year", "blade-runner-2049", BLADE_RUNNER, "Blade Runner 2049", "A sci-fi noir.", "2049"),
    invented("year", "digits-of-the-title", SPACE_ODYSSEY, "2001: A Space Odyssey", "A 2001 release.", "2001"),
    # quotations the catalog does not contain
    invented("quote", "apostrophe-inside", STAR_WARS, "Star Wars", "'Don't get cocky, kid.'", "don't get cocky"),
    invented("quote", "may-the-force", STAR_WARS, "Star Wars", "'May the Force be with you'",
             "may the force be with you"),
    invented("quote", "infinity", TOY_STORY, "Toy Story", '"To infinity and beyond!"', "to infinity and beyond"),
    invented("quote", "devil", USUAL_SUSPECTS, "The Usual Suspects", '"The greatest trick the devil ever pulled"',
             "the greatest trick the devil ever pulled"),
    invented("quote", "true-story", FARGO, "Fargo", 'Fargo is "a true story" of crime.', "a true story"),
    invented("quote", "pod-bay-doors", SPACE_ODYSSEY, "2001: A Space Odyssey", '"open the pod bay doors"',
             "open the pod bay doors"),
    invented("quote", "forget-it", CHINATOWN, "Chinatown", '"forget it, jake"', "forget it, jake"),
    invented("quote", "description-of-another-row", STAR_WARS, "Star Wars",
             'The story of "a rebellion against the Galactic Empire".', "a rebellion against the galactic empire"),
    # plots: the people, places and events of a story the catalog row does not hold (`story_claims`)
    invented("story", "time-travel", EMPIRE, "The Empire Strikes Back", "A time-traveling adventure of love and war.",
             "time-traveling"),
    invented("story", "superhero", EMPIRE, "The Empire Strikes Back", "A film that may have been a superhero's.",
             "superhero's"),
    invented("story", "young-man-small-town", FARGO, "Fargo", "A young man in a small town makes a desperate plan.",
             "man"),
    invented("story", "small-town-hyphen", FARGO, "Fargo", "A small-town crime drama.", "town"),
    invented("story", "police-chief", FARGO, "Fargo", "A police chief sees through a desperate plan.", "police"),
    invented("story", "plural", FARGO, "Fargo", "A crime drama of two cities.", "cities"),
    invented("story", "irregular-plural", USUAL_SUSPECTS, "The Usual Suspects", "Five men in a line-up.", "men"),
    invented("story", "aliens", TWELVE_MONKEYS, "Twelve Monkeys", "A 1995 sci-fi drama of aliens.", "aliens"),
    invented("story", "space-is-no-category", TWELVE_MONKEYS, "Twelve Monkeys", "A sci-fi drama set in space.",
             "space"),
    invented("story", "true-story", FARGO, "Fargo", "A crime drama based on a true story.", "based on a true"),
    invented("story", "war-without-war-category", TOY_STORY, "Toy Story", "A comedy of toys at war.", "war"),
    invented("story", "in-the-headline", GODFATHER, "The Godfather, a son at war with a city",
             "A 1972 crime drama.", "son"),
]


def grounded(name: str, item: dict, title: str, body: str, cta: str = "Watch now"):
    return pytest.param(item, ad(title, body, cta), id=name)


GROUNDED = [
    grounded("sw-space-adventure", STAR_WARS, "Star Wars: a sci-fi adventure for fans",
             "Action, romance and war among the stars."),
    grounded("sw-tonight", STAR_WARS, "Watch Star Wars tonight", "Join the rebellion in this 1977 sci-fi adventure.",
             "Stream it tonight"),
    grounded("sw-brand-kit", STAR_WARS, "Star Wars on AdLoop Cinema",
             "A sci-fi classic from 1977. Subscription required. Terms apply."),
    grounded("sw-title-with-year", STAR_WARS, "Star Wars (1977)", "Science fiction, action and romance.",
             "Book tickets"),
    grounded("sw-hook-after-colon", STAR_WARS, "Star Wars: The adventure begins", "A world at war. Heroes rise."),
    grounded("sw-relive", STAR_WARS, "Relive Star Wars", "The 1977 sci-fi adventure, romance and all."),
    grounded("sw-capitalised-categories", STAR_WARS, "Star Wars", "A Sci-Fi classic with Romance and War.",
             "Watch Star Wars now"),
    grounded("sw-start-watching", STAR_WARS, "Star Wars", "Romance and war among the stars.", "Start watching"),
    grounded("sw-brand-cta", STAR_WARS, "Star Wars", "An epic sci-fi adventure. Watch it on AdLoop Cinema.",
             "Watch now on AdLoop Cinema"),
    grounded("sw-desc-rebellion", STAR_WARS_DESCRIBED, "Star Wars: join the rebellion",
             "A farmer's son joins a rebellion against the Galactic Empire."),
    grounded("sw-desc-empire", STAR_WARS_DESCRIBED, "Star Wars", "Take on the Galactic Empire in this 1977 adventure."),
    grounded("sw-desc-quote", STAR_WARS_DESCRIBED, "Star Wars",
             'The story of "a rebellion against the Galactic Empire".'),
    grounded("sw-desc-princess", STAR_WARS_DESCRIBED, "Rescue a princess",
             "Star Wars: a farmer's son takes on the Galactic Empire."),
    grounded("ts-kids", TOY_STORY, "Toy Story", "A 1995 animated comedy for kids."),
    grounded("ts-family", TOY_STORY, "Toy Story: fun for the whole family", "Animation and comedy for children."),
    grounded("ts-tonight", TOY_STORY, "Watch Toy Story tonight", "The toys come to life in this 1995 comedy.",
             "Stream it tonight"),
    grounded("ts-childrens", TOY_STORY, "Toy Story", "A charming Children's comedy."),
    grounded("ts-desc-characters", TOY_STORY_DESCRIBED, "Toy Story",
             "Woody and Buzz Lightyear come to life in this 1995 comedy."),
    grounded("ts-desc-meet-woody", TOY_STORY_DESCRIBED, "Meet Woody", "A cowboy doll and a spaceman toy in Toy Story."),
    grounded("us-article-moved", USUAL_SUSPECTS, "The Usual Suspects", "A 1995 crime thriller full of twists."),
    grounded("us-without-article", USUAL_SUSPECTS, "Usual Suspects", "Crime and suspense from 1995.",
             "Stream it tonight"),
    grounded("us-meet", USUAL_SUSPECTS, "Meet The Usual Suspects", "A twisty crime thriller."),
    grounded("us-catalog-title-quoted", USUAL_SUSPECTS, "The Usual Suspects", '"Usual Suspects, The"'),
    grounded("odyssey-digits", SPACE_ODYSSEY, "2001: A Space Odyssey", "A 1968 sci-fi journey into the unknown."),
    grounded("odyssey-experience", SPACE_ODYSSEY, "Experience 2001: A Space Odyssey",
             "Drama, mystery and science fiction.", "Book tickets"),
    grounded("odyssey-big-screen", SPACE_ODYSSEY, "2001: A Space Odyssey returns",
             "The 1968 classic on the big screen.", "Book tickets"),
    grounded("odyssey-title-quoted", SPACE_ODYSSEY, '"2001: A Space Odyssey"', "A 1968 sci-fi drama."),
    grounded("se7en-digit", SE7EN, "Se7en", "A dark 1995 crime thriller."),
    grounded("se7en-tonight", SE7EN, "Watch Se7en tonight", "Crime, suspense and a thriller you won't forget.",
             "Stream it tonight"),
    grounded("chinatown-hyphen", CHINATOWN, "Chinatown", "A 1974 film-noir mystery."),
    grounded("chinatown-noir-alias", CHINATOWN, "Chinatown: pure noir", "Mystery and thriller from 1974."),
    grounded("chinatown-capitalised-hyphen", CHINATOWN, "Discover Chinatown", "A Film-Noir classic."),
    grounded("fargo-dark-edge", FARGO, "Fargo", "A 1996 crime drama with a dark edge."),
    grounded("fargo-tickets", FARGO, "Fargo: crime in the snow", "A thriller from 1996.", "Get tickets"),
    grounded("fargo-trailer", FARGO, "Fargo", "A crime drama.", "Watch the trailer"),
    grounded("fargo-stream", FARGO, "Fargo", "A dark crime drama.", "Stream Fargo now"),
    grounded("t2-digit-title", TERMINATOR_2, "Terminator 2: Judgment Day", "A 1991 sci-fi action thriller."),
    grounded("t2-short-name", TERMINATOR_2, "Terminator 2", "Sci-fi action from 1991."),
    grounded("apollo-13", APOLLO_13, "Apollo 13", "A 1995 drama of nerve.", "Rent it today"),
    grounded("godfather-article-moved", GODFATHER, "The Godfather", "Crime, family and power, 1972."),
    grounded("wizard-of-oz", WIZARD_OF_OZ, "The Wizard of Oz", "A 1939 musical adventure for the whole family."),
    grounded("la-confidential-initials", LA_CONFIDENTIAL, "L.A. Confidential", "A 1997 film-noir crime mystery."),
    grounded("maltese-falcon", MALTESE_FALCON, "The Maltese Falcon", "A 1941 Film-Noir mystery.",
             "Watch now on AdLoop Cinema"),
    grounded("blade-runner", BLADE_RUNNER, "Blade Runner", "A 1982 sci-fi noir.", "Play"),
    grounded("holy-grail-connectors", HOLY_GRAIL, "Monty Python and the Holy Grail", "A 1974 comedy."),
    grounded("sw-possessive", STAR_WARS, "Star Wars, a saga of heroes", "Star Wars' heroes return."),
    grounded("possessive-in-the-name", TIFFANYS, "Breakfast at Tiffany's", "A 1961 romance for a day at Tiffany's."),
    grounded("sw-decade", STAR_WARS, "Star Wars", "A 1970s sci-fi classic. A '70s adventure."),
    grounded("sw-desc-quote-full-stop", STAR_WARS_DESCRIBED, "Star Wars", 'It\'s "a rebellion against the Galactic '
             'Empire."'),
    grounded("sw-more-ctas", STAR_WARS, "Star Wars", "A sci-fi adventure.", "Buy tickets"),
    grounded("sw-subscribe", STAR_WARS, "Star Wars", "Witness the 1977 sci-fi adventure.", "Subscribe now"),
    grounded("sw-reserve", STAR_WARS, "Star Wars", "Settle in for a sci-fi night.", "Reserve your seat"),
    grounded("us-display-name-quoted", USUAL_SUSPECTS, '"The Usual Suspects"', "A 1995 crime thriller."),
    grounded("seven-alternate-title", SEVEN, "Se7en, a dark 1995 crime thriller", "Crime and suspense."),
    grounded("sw-not-superlatives", STAR_WARS, "Star Wars", "A quest to save the world, and an honest hero."),
    grounded("sw-most-of", STAR_WARS, "Star Wars", "Make the most of tonight with this 1977 adventure."),
    grounded("rumble-part-of-the-name", RUMBLE, "Rumble in the Bronx, a fight for the Bronx",
             "A crime unfolds in the Bronx."),
    grounded("wonka-part-of-the-name", WONKA, "Willy Wonka and the Chocolate Factory",
             "Willy Wonka opens his Chocolate Factory in this 1971 musical."),
    grounded("wonka-possessive-part-of-the-name", WONKA, "Willy Wonka and the Chocolate Factory",
             "Willy Wonka's factory opens its doors."),
    grounded("sw-contractions-open-sentences", STAR_WARS, "Star Wars", "Rebels fight on. They're outnumbered. "
             "He's a dreamer."),
    grounded("fargo-plain-words-of-another-title", FARGO, "Fargo", "A crime drama on the edge of your seat."),
    grounded("twelve-monkeys", TWELVE_MONKEYS, "Twelve Monkeys", "A 1995 sci-fi drama.", "Add to your list"),
    # story words the facts hold: the description, the title, a category that always has them
    grounded("sw-desc-princess", STAR_WARS_DESCRIBED, "Star Wars", "A farmer's son sets out to rescue a princess."),
    grounded("dead-man-title", DEAD_MAN_WALKING, "Dead Man Walking", "A 1995 drama about a man and his last days."),
    grounded("war-category-soldiers", EMPIRE, "The Empire Strikes Back", "Soldiers, battles and a love story."),
    grounded("western-category-cowboys", UNFORGIVEN, "Unforgiven", "A 1992 western of outlaws and cowboys."),
    grounded("children-category-kids", TOY_STORY, "Toy Story", "A 1995 comedy for kids of every age."),
    grounded("brand-kit-story-word", FARGO, "Fargo", "A crime drama to stream from home.", "Watch now"),
    grounded("idioms-are-no-story", FARGO, "Fargo", "A couple of hours of crime drama for lovers of a thriller."),
    grounded("words-inside-words", STAR_WARS, "Star Wars", "A sci-fi adventure of friendship and manhood."),
]


@pytest.mark.parametrize(("item", "copy", "offending"), INVENTED)
def test_invented_claim_is_rejected_naming_the_words(item: dict, copy: dict[str, str], offending: str) -> None:
    verdict = check(copy, item)
    assert not verdict.passed
    assert "does not name the item" not in verdict.reasons  # rejected for the claim, not for a missing name
    assert any(offending.lower() in r.lower() for r in verdict.reasons), verdict.reasons
    assert any(offending.lower() in r.lower() for r in problems(copy, item)), "the grounding check names it"
    assert verdict.to_dict()["status"] == "rejected"


@pytest.mark.parametrize(("item", "copy"), GROUNDED)
def test_grounded_copy_passes(item: dict, copy: dict[str, str]) -> None:
    verdict = check(copy, item)
    assert verdict.reasons == []
    assert verdict.passed
    assert grounding.problems(copy, grounding.facts_for(item, BRAND_KIT)) == []


@pytest.mark.parametrize(("title", "reason"), [
    ("Star Wars: The Force Awakens", "names 'Force Awakens', which the catalog does not support"),
    ("Star Wars: A New Hope", "names 'New Hope', which the catalog does not support"),
    ("Star Wars (1980)", "says 1980, but the item is from 1977"),
])
def test_reason_text_names_the_words(title: str, reason: str) -> None:
    copy = ad(title, "A sci-fi adventure.")
    assert problems(copy, STAR_WARS) == [reason]
    assert check(copy, STAR_WARS).reasons == [reason]


@pytest.mark.parametrize(("body", "reason"), [
    ("A sci-fi adventure for only $9.99.", "states '$9.99', which the catalog does not support"),
    ("A top-rated sci-fi adventure.", "claims 'top-rated', which the catalog does not support"),
    ("Harrison Ford stars.", "names 'Harrison Ford', which the catalog does not support"),
    ('Fans say "what a ride".', "quotes 'what a ride', which the catalog does not support"),
    ("Back from 1980.", "says 1980, but the item is from 1977"),
])
def test_reason_text_of_each_kind(body: str, reason: str) -> None:
    assert problems(ad("Star Wars", body), STAR_WARS) == [reason]


def test_wrong_year_of_an_item_without_a_year() -> None:
    item = {"item_id": "50", "title": "Star Wars", "category": "Action|Sci-Fi"}
    assert problems(ad("Star Wars", "A 1980 classic."), item) == ["says 1980, but the item is from an unknown year"]


@pytest.mark.parametrize(("described", "bare", "body", "words"), [
    (STAR_WARS_DESCRIBED, STAR_WARS, "Take on the Galactic Empire in this 1977 adventure.", "Galactic Empire"),
    (TOY_STORY_DESCRIBED, TOY_STORY, "A comedy with Buzz Lightyear.", "Buzz Lightyear"),
    (TOY_STORY_DESCRIBED, TOY_STORY, "Meet Woody, a cowboy doll.", "Woody"),
])
def test_description_supports_words_only_for_its_own_item(described: dict, bare: dict, body: str, words: str) -> None:
    name = display_name(described["title"])
    copy = ad(name, body)
    assert check(copy, described).reasons == []
    verdict = check(copy, bare)
    assert not verdict.passed
    assert any(words.lower() in r.lower() for r in verdict.reasons), verdict.reasons
    assert grounding.facts_for(described).supports(words.split()[0])
    assert not grounding.facts_for(bare).supports(words.split()[0])


def test_facts_for_reads_the_catalog_row() -> None:
    facts = grounding.facts_for(STAR_WARS_DESCRIBED)
    assert facts.year == 1977
    assert "1977" in facts.numbers
    for phrase in ("Star Wars", "Sci-Fi", "science fiction", "Romance"):  # the name and categories, as wholes
        assert phrase in facts.phrases, phrase
    for word in ("Galactic", "Empire", "rebellion", "princess"):  # the description's words
        assert facts.supports(word), word
    for word in ("Skywalker", "Star", "Wars"):  # a title's words alone support nothing: only the whole name
        assert not facts.supports(word), word
    assert "a rebellion against the galactic empire" in facts.text


def test_facts_for_reads_brand_kit_terms() -> None:
    kit = {**BRAND_KIT, "required_disclaimer": "Subscription required. Cancel within 30 days."}
    with_kit, without_kit = grounding.facts_for(STAR_WARS, kit), grounding.facts_for(STAR_WARS)
    for word in ("AdLoop", "Cinema", "Subscription", "Cancel"):
        assert with_kit.supports(word), word
        assert not without_kit.supports(word), word
    assert "30" in with_kit.numbers and "30" not in without_kit.numbers
    copy = ad("Star Wars", "A 1977 sci-fi adventure, only on AdLoop Cinema. Cancel within 30 days.")
    assert grounding.problems(copy, with_kit) == []
    assert "names 'AdLoop Cinema', which the catalog does not support" in grounding.problems(copy, without_kit)
    assert "states '30', which the catalog does not support" in grounding.problems(copy, without_kit)


def test_another_brand_is_not_supported_by_the_kit() -> None:
    verdict = check(ad("Star Wars", "A 1977 sci-fi adventure, only on PopFlix."), STAR_WARS)
    assert verdict.reasons == ["names 'PopFlix', which the catalog does not support"]


def test_the_names_an_item_goes_by_are_its_facts() -> None:
    assert "Se7en" in grounding.facts_for(SEVEN).phrases and grounding.facts_for(TOY_STORY).year == 1995
    assert grounding.names_of("Usual Suspects, The (1995)")[:3] == ["The Usual Suspects", "Usual Suspects, The",
                                                                     "Usual Suspects"]
    assert "Terminator 2" in grounding.names_of(TERMINATOR_2["title"])
    assert "2001" not in grounding.names_of(SPACE_ODYSSEY["title"])  # digits alone are no name: years stay checked
    assert "AdLoop Cinema" in grounding.facts_for(STAR_WARS, BRAND_KIT).phrases


@pytest.mark.parametrize(("item", "quote"), [
    (STAR_WARS_DESCRIBED, '"a rebellion against the Galactic Empire"'),
    (STAR_WARS_DESCRIBED, "'joins a rebellion'"),
    (STAR_WARS_DESCRIBED, "“rescue a princess”"),
    (SPACE_ODYSSEY, '"2001: A Space Odyssey"'),
    (USUAL_SUSPECTS, '"Usual Suspects, The"'),
])
def test_quoted_phrase_in_the_catalog_passes(item: dict, quote: str) -> None:
    copy = ad(display_name(item["title"]), f"In its own words: {quote}.")
    assert problems(copy, item) == []
    assert check(copy, item).passed


def test_same_quote_without_the_description_is_rejected() -> None:
    copy = ad("Star Wars", "In its own words: 'joins a rebellion'.")
    assert problems(copy, STAR_WARS) == ["quotes 'joins a rebellion', which the catalog does not support"]


def test_safety_reports_grounding_with_its_other_checks() -> None:
    copy = ad("Star Wars: The Force Awakens", "A free sci-fi comedy for only $9.99.")
    reasons = check(copy, STAR_WARS).reasons
    assert "names 'Force Awakens', which the catalog does not support" in reasons
    assert "states '$9.99', which the catalog does not support" in reasons
    assert "calls it Comedy, which the catalog does not list for this item" in reasons
    assert "uses the banned word 'free'" in reasons


@pytest.mark.parametrize(("item", "body", "label"), [
    (GODFATHER, "A film for the whole family.", "Children's"),
    (GODFATHER, "A family-friendly night in.", "Children's"),
    (GODFATHER, "The war film of its decade.", "War"),
    (GODFATHER, "A romantic story of power.", "Romance"),
    (STAR_WARS, "A sci-fi adventure for the whole family.", "Children's"),
    (TOY_STORY, "Music film fun.", "Musical"),
])
def test_a_category_said_as_the_kind_of_film_is_a_claim(item: dict, body: str, label: str) -> None:
    """Everyday words name a category only as the kind of film ("a war film", "for the whole family"); the
    Studio rejects the claim and the audiences read it the same way (`category_claims`)."""
    reasons = check(ad(display_name(item["title"]), body), item).reasons
    assert f"calls it {label}, which the catalog does not list for this item" in reasons


@pytest.mark.parametrize(("item", "title", "body"), [
    (GODFATHER, "The Godfather", "A family saga of crime and power."),
    (GODFATHER, "The Godfather", "A war between families, and a son who takes his place."),
    (STAR_WARS, "Star Wars", "A dramatic, fantastic adventure among the stars."),
    (KIDS, "Kids", "A raw drama about growing up."),
])
def test_everyday_words_and_the_items_own_name_claim_no_category(item: dict, title: str, body: str) -> None:
    assert not [r for r in check(ad(title, body), item).reasons if r.startswith("calls it")]


@pytest.mark.parametrize(("title", "reason"), [
    ("St\u0430r Wars: a space saga", "mixes writing systems (latin text with '\u0430')"),  # a Cyrillic 'a'
    ("Star Wars: a \ufffd saga", "uses characters the banner font cannot print ('\ufffd')"),  # decoded wrongly
    ("Star Wars: \u661f\u9645 saga", "uses characters the banner font cannot print ('\u661f', '\u9645')"),
])
def test_copy_a_banner_cannot_print_or_that_mixes_scripts_is_rejected(title: str, reason: str) -> None:
    assert reason in check(ad(title, "Rebels take on an empire."), STAR_WARS).reasons


def test_accented_letters_and_typographic_punctuation_pass_the_script_check() -> None:
    assert safety.script_problems("Les Misérables — “a musical” with café’s crème brûlée") == []


def test_the_writer_keeps_out_only_what_the_checks_reject() -> None:
    """The engine's bans are the checks' rules before the fact: every avoided claim or story word is one the
    check rejects, and every number the writer allows is one the check accepts, names' digits included."""
    for word in grounding.CLAIM_WORDS:
        assert check(ad("Star Wars", f"A {word} adventure."), STAR_WARS).reasons, word
    avoided = safety.words_to_avoid(STAR_WARS, CATEGORIES, BRAND_KIT)
    assert {"man", "men", "town", "towns", "superhero", "space"} <= set(avoided)
    assert not {"soldier", "soldiers", "battle", "war", "hero"} & set(avoided)  # a War and Action film has them
    for word in avoided:
        assert check(ad("Star Wars", f"A sci-fi adventure with a {word}."), STAR_WARS).reasons, word
    fargo = safety.words_to_avoid(FARGO, CATEGORIES, BRAND_KIT)  # a phrase too: " fiction" after " science"
    assert {"sci-fi", "science fiction"} <= set(fargo)
    assert all(check(ad("Fargo", f"A 1996 crime drama, {word}."), FARGO).reasons for word in fargo)
    kit = {**BRAND_KIT, "required_disclaimer": "Cancel within 30 days."}
    assert safety.numbers_to_allow(STAR_WARS, kit) == {"1977", "30"}
    assert safety.numbers_to_allow(TERMINATOR_2, {}) >= {"2", str(TERMINATOR_2["year"])}
    for number in safety.numbers_to_allow(TERMINATOR_2, kit):
        body = "Terminator 2: Judgment Day is back." if number == "2" else f"A thriller, {number}."  # a name's digits
        # are allowed to write the name: the check blanks them with it
        assert not grounding.problems(ad("Terminator 2", body), grounding.facts_for(TERMINATOR_2, kit)), number
    assert safety.numbers_to_allow(SPACE_ODYSSEY, {}) == {"1968"}  # "2001" alone reads as a year: not written


def test_noise_that_names_nothing_is_rejected_as_unreadable() -> None:
    """A random model's body (drawn by the tiny test model through the Studio, under every ban) names, claims and
    tells nothing, so no other check rejected it; copy with a coinage or two still reads as words."""
    noise = ad("Star Wars, for fans of The Empire Strikes Back", "amphib modifyingplays underlyingjingffect dividends "
               "keys accord scaly repeatedly pref renovationcancel automotivegex ascertain outfile")
    verdict = safety.check(noise, STAR_WARS, CATEGORIES, OTHER_TITLES, BRAND_KIT, ["Empire Strikes Back, The (1980)"])
    assert verdict.reasons == ["body does not read as words ('amphib', 'modifyingplays', 'underlyingjingffect'...)",
                               "body does not read as a sentence (none of its 13 words is 'a', 'the', 'of'...)"]
    real_words = ad("Star Wars", "mosaics reproductive brokers breastfeeding pressing attacker")  # all in English
    assert safety.gibberish_problems(real_words) == [
        "body does not read as a sentence (none of its 6 words is 'a', 'the', 'of'...)"]
    assert not safety.gibberish_problems(ad("Star Wars", "Pure sci-fi suspense for tonight."))
    for noise, reason in (("While", "body says too little (1 word)"),
                          ("olksć cruise", "body says too little (2 words)"),
                          ("imbalances financed legislatures ?", "body does not read as a sentence (none of its 3 "
                                                                   "words is 'a', 'the', 'of'...)")):
        assert safety.gibberish_problems(ad("Star Wars", noise)) == [reason], noise  # the random model's, in CI
    assert safety.gibberish_problems(ad("Star Wars", "Pure sci-fi suspense tonight."))  # the price: a fragment
    assert not safety.gibberish_problems(ad("Star Wars", "A 1977 classic."))  # a number counts as a word
    for body in ("A lighthearted 1977 adventure, a fun and lighthearted romp.", "The rebels and their droids at war.",
                 "A swoon-worthy 1977 romance among the stars."):
        assert check(ad("Star Wars", body), STAR_WARS).passed, body
    assert safety.gibberish_problems(ad("Star Wars", "pubertyinside amalgamessim keys."))  # two in three
    assert not safety.gibberish_problems(ad("Star Wars", "A lighthearted romp for the fans."))  # two odd in five
