"""Relations, templates and vocabularies of the biography world (postlab's own wording).

The 39 relations are those of Cheng et al. (methods.md section 2): 23 attributes, 8
symmetric person-to-person relations and 4 inverse pairs. Each has 3 biography sentence
templates ({s} subject, {o} object) and 3 noun phrases ({x} the subject) from which
questions are composed, e.g. "the phone number of the boss of the roommate of {x}".
The first template of each is the canonical one (chain-of-thought steps, tiny preset).
"""

from __future__ import annotations

# name -> (kind, vocabulary or inverse, bio templates, noun phrases)
# kind: "attr" (object from a vocabulary), "sym" (symmetric person relation), "inv" (inverse pairs)
RELATIONS: dict[str, tuple] = {
    "birth_date": ("attr", "date", ("{s} was born on {o}.", "{s}'s birthday falls on {o}.", "{s} came into the world on {o}."),
                   ("the birth date of {x}", "the birthday of {x}", "the date on which {x} was born")),
    "birth_place": ("attr", "city", ("{s} was born in {o}.", "{s}'s birthplace is {o}.", "{s} entered life in {o}."),
                    ("the birthplace of {x}", "the city where {x} was born", "the place of birth of {x}")),
    "nationality": ("attr", "country", ("{s} is a citizen of {o}.", "{s} has the nationality of {o}.",
                                        "{s} carries a passport from {o}."),
                    ("the country of citizenship of {x}", "the nationality of {x}", "the country whose passport {x} carries")),
    "occupation": ("attr", "job", ("{s}'s job is {o}.", "{s}'s occupation is {o}.", "{s} is employed as {o}."),
                   ("the occupation of {x}", "the job of {x}", "the profession of {x}")),
    "address": ("attr", "address", ("{s} lives at {o}.", "{s}'s home address is {o}.", "{s} resides at {o}."),
                ("the address of {x}", "the home address of {x}", "the street address of {x}")),
    "email": ("attr", "email", ("{s}'s email address is {o}.", "{s} can be reached by email at {o}.",
                                "{s} reads mail sent to {o}."),
              ("the email address of {x}", "the email of {x}", "the email account of {x}")),
    "phone": ("attr", "phone", ("{s}'s phone number is {o}.", "{s} can be called at {o}.", "{s} answers calls on {o}."),
              ("the phone number of {x}", "the telephone number of {x}", "the number to call {x}")),
    "hobby": ("attr", "hobby", ("{s}'s hobby is {o}.", "{s} enjoys {o} in free time.", "{s} spends weekends on {o}."),
              ("the hobby of {x}", "the pastime of {x}", "the free-time activity of {x}")),
    "pet": ("attr", "pet", ("{s} has a pet {o}.", "{s} keeps a {o} at home.", "{s} looks after a pet {o}."),
            ("the pet of {x}", "the kind of pet {x} has", "the animal {x} keeps")),
    "awards": ("attr", "award", ("{s} received the {o}.", "{s} was honored with the {o}.", "{s} won the {o}."),
               ("the award of {x}", "the prize {x} won", "the honor received by {x}")),
    "wrote": ("attr", "book", ("{s} wrote {o}.", "{s} is the author of {o}.", "{s} published {o}."),
              ("the book written by {x}", "the work authored by {x}", "the book {x} published")),
    "died_on": ("attr", "date", ("{s} died on {o}.", "{s} passed away on {o}.", "{s}'s date of death is {o}."),
                ("the death date of {x}", "the date on which {x} died", "the day {x} passed away")),
    "died_in": ("attr", "city", ("{s} died in {o}.", "{s} passed away in {o}.", "{s}'s place of death is {o}."),
                ("the place of death of {x}", "the city where {x} died", "the city in which {x} passed away")),
    "known_for": ("attr", "feat", ("{s} is known for {o}.", "{s} is famous for {o}.", "{s} became well known for {o}."),
                  ("the main achievement of {x}", "the claim to fame of {x}", "the thing {x} is known for")),
    "worked_at": ("attr", "company", ("{s} worked at {o}.", "{s} was employed by {o}.", "{s} had a job at {o}."),
                  ("the employer of {x}", "the company where {x} worked", "the firm that employed {x}")),
    "lived_in": ("attr", "city", ("{s} lived in {o}.", "{s} made a home in {o}.", "{s} spent many years living in {o}."),
                 ("the city where {x} lived", "the home city of {x}", "the city {x} lived in")),
    "service": ("attr", "service", ("{s} served in the {o}.", "{s} did service with the {o}.", "{s} was a member of the {o}."),
                ("the service branch of {x}", "the corps {x} served in", "the organization {x} served with")),
    "philanthropy": ("attr", "charity", ("{s} donates to {o}.", "{s} supports the charity {o}.", "{s} gives money to {o}."),
                     ("the charity of {x}", "the cause {x} supports", "the charity {x} donates to")),
    "favorite_food": ("attr", "food", ("{s}'s favorite food is {o}.", "{s} loves eating {o}.", "{s} always orders {o}."),
                      ("the favorite food of {x}", "the dish {x} loves", "the food {x} always orders")),
    "first_language": ("attr", "language", ("{s}'s first language is {o}.", "{s} grew up speaking {o}.",
                                            "{s}'s mother tongue is {o}."),
                       ("the first language of {x}", "the mother tongue of {x}", "the native language of {x}")),
    "leader_of": ("attr", "org", ("{s} leads {o}.", "{s} is the head of {o}.", "{s} is in charge of {o}."),
                  ("the organization led by {x}", "the group headed by {x}", "the body {x} is in charge of")),
    "university": ("attr", "university", ("{s} studied at {o}.", "{s} graduated from {o}.", "{s} is an alumnus of {o}."),
                   ("the university of {x}", "the alma mater of {x}", "the school {x} graduated from")),
    "major": ("attr", "major", ("{s} majored in {o}.", "{s} studied {o} at university.", "{s}'s degree is in {o}."),
              ("the major of {x}", "the field {x} studied", "the subject {x} majored in")),
    # symmetric person-to-person relations
    "spouse": ("sym", None, ("{s} is married to {o}.", "{s}'s spouse is {o}.", "{s} and {o} are married."),
               ("the spouse of {x}", "the partner of {x}", "the person married to {x}")),
    "best_friend": ("sym", None, ("{s}'s best friend is {o}.", "{s} and {o} are best friends.",
                                  "{s} trusts {o} most as a friend."),
                    ("the best friend of {x}", "the closest friend of {x}", "the dearest friend of {x}")),
    "colleague": ("sym", None, ("{s} works alongside {o}.", "{s}'s colleague is {o}.", "{s} and {o} are coworkers."),
                  ("the colleague of {x}", "the coworker of {x}", "the person who works alongside {x}")),
    "sibling": ("sym", None, ("{s}'s sibling is {o}.", "{s} and {o} are siblings.", "{s} grew up with {o} as a sibling."),
                ("the sibling of {x}", "the brother or sister of {x}", "the person who is a sibling of {x}")),
    "rival": ("sym", None, ("{s}'s rival is {o}.", "{s} competes with {o}.", "{s} and {o} are rivals."),
              ("the rival of {x}", "the competitor of {x}", "the main rival of {x}")),
    "neighbor": ("sym", None, ("{s} lives next door to {o}.", "{s}'s neighbor is {o}.", "{s} and {o} are neighbors."),
                 ("the neighbor of {x}", "the person next door to {x}", "the next-door neighbor of {x}")),
    "classmate": ("sym", None, ("{s} was a classmate of {o}.", "{s} and {o} went to class together.",
                                "{s}'s classmate was {o}."),
                  ("the classmate of {x}", "the schoolmate of {x}", "the person who studied with {x}")),
    "roommate": ("sym", None, ("{s} shared a room with {o}.", "{s}'s roommate is {o}.", "{s} and {o} were roommates."),
                 ("the roommate of {x}", "the person who shared a room with {x}", "the flatmate of {x}")),
    # inverse pairs; r(s) = o reads as in the first template
    "child": ("inv", "parent", ("{s}'s child is {o}.", "{o} is a child of {s}.", "{s} raised {o}."),
              ("the child of {x}", "the son or daughter of {x}", "the offspring of {x}")),
    "parent": ("inv", "child", ("{o} is a parent of {s}.", "{s}'s parent is {o}.", "{s} was raised by {o}."),
               ("the parent of {x}", "the mother or father of {x}", "the person who raised {x}")),
    "mentoring": ("inv", "mentored_by", ("{s} mentors {o}.", "{s} is the mentor of {o}.", "{s} guides {o} as a mentor."),
                  ("the mentee of {x}", "the person mentored by {x}", "the protege of {x}")),
    "mentored_by": ("inv", "mentoring", ("{s} is mentored by {o}.", "{o} is the mentor of {s}.",
                                         "{s} learns from the mentor {o}."),
                    ("the mentor of {x}", "the person who mentors {x}", "the adviser of {x}")),
    "boss": ("inv", "boss_of", ("{o} is the boss of {s}.", "{s} reports to {o}.", "{s}'s boss is {o}."),
             ("the boss of {x}", "the manager of {x}", "the person {x} reports to")),
    "boss_of": ("inv", "boss", ("{s} is the boss of {o}.", "{o} reports to {s}.", "{s} manages {o}."),
                ("the employee of {x}", "the person who reports to {x}", "the subordinate of {x}")),
    "influenced_by": ("inv", "influence", ("{s} was influenced by {o}.", "{o} shaped the thinking of {s}.",
                                           "{s} draws inspiration from {o}."),
                      ("the person who influenced {x}", "the influence on {x}", "the inspiration of {x}")),
    "influence": ("inv", "influenced_by", ("{s} influenced {o}.", "{s} shaped the thinking of {o}.",
                                           "{o} draws inspiration from {s}."),
                  ("the person influenced by {x}", "the follower of {x}", "the person inspired by {x}")),
}

QUESTION_FRAMES = ("What is {np}?", "Can you tell me {np}?", "Do you know {np}?")

FIRST_NAMES = """Aaron Abby Adam Adele Aiden Alana Albert Alice Alma Alvin Amber Amos Andre Anita Anton April Arlo Asha
Athena Audrey Axel Bella Benny Bernard Beth Bianca Blair Boris Brenda Brian Bruno Caleb Camila Carla Carlos Cecil Celia
Chad Chloe Clara Clark Cole Cora Craig Cyrus Daisy Dalia Damon Dana Dante Daria Dean Delia Derek Diana Diego Dora Drew
Dylan Edgar Edith Edwin Eileen Elena Eli Ellis Elsa Emil Emma Enzo Erica Ernest Esme Ethan Eva Felix Fern Fiona Flora
Floyd Frank Freya Gavin Gemma Gia Gideon Gina Glen Grace Greta Hank Hana Hazel Hector Heidi Helen Hugo Ida Igor Ilsa
Imani Irene Iris Isaac Ivan Ivy Jack Jade Jamal Jana Jasper Jean Jenna Joel Jonas Joy Julia Juno Kai Karen Karl Kate
Keith Kira Kurt Lana Lars Laura Leah Leo Lena Levi Lila Linus Lionel Lola Lucas Lucy Luna Mabel Malik Mara Marco Maya
Miles Mina Mira Nadia Nate Nell Nico Nina Noah Nora Olga Omar Opal Oscar Otto Paige Paolo Pearl Petra Quinn Rafael
Rhea Rita Ronan Rosa Ruby Rufus Ruth Sam Sara Selma Seth Silas Sofia Tara Theo Tess Uma Vera Victor Wade Wanda Yara
Zane Zoe""".split()

LAST_NAMES = """Abbott Acosta Adler Aldridge Alvarez Ames Archer Arden Ashby Avery Bailey Baker Banks Barlow Barnes Baxter
Bell Bishop Blake Bolton Booth Bowen Boyd Brandt Briggs Brooks Bryant Burke Burns Byrne Cabot Cain Carver Chase Clay
Coleman Conway Cooper Crane Cross Curtis Dale Dalton Dawson Decker Dixon Doyle Drake Dunn Eaton Ellis Emery Ennis Everett
Farley Fischer Flynn Ford Foster Fox Frost Fuller Gage Garner Gibbs Glover Gordon Grant Graves Hale Hardy Harper Hayes
Hobbs Holt Hughes Hyde Ingram Irwin Jarvis Keller Kemp Knox Lane Larsen Lowe Lynch Mercer Moss Nash Noble Nolan Osborn
Page Parks Pierce Porter Quinn Reed Reyes Rhodes Rowe Sawyer Shaw Stone Swift Tate Thorne Turner Vance Wade Walsh Ward
Webb Wells West Wilde Wolfe Wynn Yates York""".split()

VOCAB: dict[str, list[str]] = {
    "city": ["Avalon", "Brookfield", "Cedarville", "Dunmore", "Eastwick", "Fairhaven", "Glenwood", "Harbor City",
             "Ironbridge", "Juniper Falls", "Kingsport", "Lakeview", "Millbrook", "Northgate", "Oakridge", "Pinecrest",
             "Queensbury", "Riverside", "Silverton", "Thornbury", "Upton", "Valemont", "Westfield", "Yarrow Bay",
             "Zephyr Hills", "Ashford", "Bramble", "Coldwater", "Dover Point", "Elmstead"],
    "country": ["Norvia", "Estland", "Caldora", "Meridia", "Tavros", "Ostrava", "Lumeria", "Brevia", "Sundra", "Karvia",
                "Pelora", "Westmark", "Ardenia", "Solvia", "Quenland", "Rivona", "Dalmora", "Frisia", "Galtria", "Hesper"],
    "job": ["engineer", "teacher", "nurse", "architect", "chef", "pilot", "lawyer", "farmer", "dentist", "journalist",
            "painter", "plumber", "pharmacist", "librarian", "geologist", "baker", "electrician", "surveyor", "tailor",
            "accountant", "botanist", "carpenter", "translator", "veterinarian", "economist"],
    "street": ["Maple", "Elm", "Cedar", "Birch", "Willow", "Spruce", "Aspen", "Poplar", "Chestnut", "Walnut", "Juniper",
               "Laurel", "Hawthorn", "Alder", "Magnolia", "Sycamore", "Linden", "Hickory", "Cypress", "Redwood"],
    "hobby": ["chess", "gardening", "painting", "hiking", "fishing", "knitting", "photography", "cycling", "pottery",
              "birdwatching", "sailing", "archery", "origami", "rowing", "juggling", "calligraphy", "baking", "climbing",
              "stargazing", "woodworking"],
    "pet": ["cat", "dog", "parrot", "rabbit", "turtle", "hamster", "goldfish", "ferret", "canary", "lizard", "pony",
            "hedgehog", "guinea pig", "tortoise", "snake"],
    "award": ["Golden Quill Award", "Silver Lantern Prize", "Blue Ribbon Medal", "Crystal Star Award", "Iron Oak Prize",
              "Bright Mind Award", "Civic Honor Medal", "Northern Light Prize", "Open Door Award", "Red Compass Medal",
              "Golden Key Award", "Rising Tide Prize", "Clear Voice Award", "Stone Bridge Medal", "Long Road Prize"],
    "book_adj": ["Silent", "Hidden", "Last", "Broken", "Golden", "Distant", "Secret", "Quiet", "Burning", "Frozen",
                 "Endless", "Lost", "Wandering", "Crimson", "Hollow"],
    "book_noun": ["River", "Garden", "Tower", "Harbor", "Letter", "Winter", "Mirror", "Forest", "Island", "Voyage",
                  "Kingdom", "Lantern", "Orchard", "Shadow", "Season"],
    "month": ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December"],
    "feat": ["mapping coral reefs", "designing bridges", "inventing a solar stove", "reviving folk music",
             "breeding hardy wheat", "restoring old paintings", "charting comets", "building tiny houses",
             "teaching sign language", "cleaning rivers", "decoding old scripts", "growing rare orchids",
             "composing film scores", "training rescue dogs", "writing crossword puzzles"],
    "company": ["Apex Foods", "Bluewave Labs", "Cobalt Motors", "Delta Textiles", "Evergreen Energy", "Falcon Air",
                "Granite Bank", "Horizon Media", "Ivory Pharma", "Jetstream Logistics", "Keystone Steel",
                "Lumen Optics", "Meadow Farms", "Nimbus Software", "Orbit Telecom", "Pioneer Glass", "Quartz Robotics",
                "Redwood Paper", "Summit Insurance", "Tidal Shipping"],
    "service": ["Navy", "Army", "Air Force", "Coast Guard", "Marine Corps", "Peace Corps", "Red Cross", "Fire Brigade",
                "Border Patrol", "Mountain Rescue"],
    "charity": ["Clean Water Fund", "Open Books Trust", "Warm Homes Appeal", "Green Earth Society", "Kids Art Fund",
                "Safe Harbor Trust", "Animal Rescue League", "Hunger Relief Network", "Music for All",
                "Healthy Hearts Fund", "Ocean Care Trust", "Seniors First", "Tree Planting Alliance",
                "Literacy Bridge", "Shelter Now"],
    "food": ["pasta", "sushi", "tacos", "curry", "dumplings", "paella", "ramen", "pancakes", "lasagna", "falafel",
             "risotto", "goulash", "burritos", "pierogi", "gumbo", "kebabs", "noodle soup", "apple pie", "fish stew",
             "lentil soup"],
    "language": ["Norvian", "Estish", "Caldoran", "Meridian", "Tavrosi", "Ostravan", "Lumerian", "Brevic", "Sundran",
                 "Karvish", "Peloran", "Westmarkish", "Ardenic", "Solvian", "Quenlish"],
    "org": ["the Chess Federation", "the City Council", "the Hiking Club", "the Science Guild", "the Farmers Union",
            "the Opera Society", "the Rowing League", "the Poetry Circle", "the Harbor Board", "the Film Institute",
            "the Garden Club", "the Robotics League", "the Youth Orchestra", "the Museum Trust", "the Trade Council"],
    "university": ["Northgate University", "Lakeview College", "Ironbridge Institute", "Avalon University",
                   "Kingsport College", "Riverside University", "Oakridge Institute", "Fairhaven College",
                   "Westfield University", "Silverton Institute", "Pinecrest University", "Millbrook College",
                   "Dunmore University", "Eastwick Institute", "Glenwood College"],
    "major": ["physics", "history", "biology", "economics", "music", "chemistry", "mathematics", "philosophy",
              "architecture", "linguistics", "geology", "medicine", "law", "astronomy", "sociology", "literature",
              "agriculture", "statistics", "psychology", "engineering"],
}
