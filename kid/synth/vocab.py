"""Word lists the synthetic databases draw their values from.

Kept apart from the domain definitions so that every domain, and every test-suite copy
of a database, samples from the same pools: a literal in a gold query ("Lyon") then
usually exists in the fresh copies too. No value contains a quote character.
"""

from __future__ import annotations

FIRST_NAMES = (
    "Ada", "Alan", "Alice", "Amir", "Ana", "Anton", "Aria", "Ben", "Bruno", "Carla",
    "Chen", "Clara", "Dana", "David", "Elena", "Emil", "Eva", "Felix", "Grace", "Hana",
    "Hugo", "Ines", "Ivan", "Jonas", "Julia", "Kai", "Karim", "Lara", "Leo", "Lina",
    "Luca", "Maya", "Mei", "Milan", "Nadia", "Nina", "Noah", "Olga", "Omar", "Oscar",
    "Paula", "Pedro", "Priya", "Rafael", "Rosa", "Sami", "Sara", "Sofia", "Tariq", "Theo",
    "Tomas", "Vera", "Victor", "Yara", "Yuki", "Zoe",
)  # fmt: skip

LAST_NAMES = (
    "Abe", "Alves", "Baker", "Berg", "Brandt", "Costa", "Cruz", "Dahl", "Diaz", "Evans",
    "Fischer", "Garcia", "Gupta", "Hansen", "Ito", "Jansen", "Kaur", "Khan", "Kim", "Klein",
    "Kowalski", "Lopez", "Meyer", "Moreau", "Muller", "Nagy", "Novak", "Okafor", "Olsen",
    "Park", "Petrov", "Reyes", "Rossi", "Sato", "Silva", "Smith", "Tanaka", "Torres",
    "Varga", "Wang", "Weber", "Wilson", "Wong", "Young", "Zhang",
)  # fmt: skip

CITIES = (
    "Amsterdam", "Athens", "Berlin", "Bogota", "Boston", "Cairo", "Chicago", "Dallas",
    "Denver", "Dublin", "Helsinki", "Lagos", "Lima", "Lisbon", "London", "Lyon", "Madrid",
    "Milan", "Montreal", "Mumbai", "Nairobi", "Osaka", "Oslo", "Paris", "Prague", "Seoul",
    "Sydney", "Tokyo", "Toronto", "Vienna",
)  # fmt: skip

COUNTRIES = (
    "Argentina", "Australia", "Brazil", "Canada", "Chile", "China", "Egypt", "France",
    "Germany", "Ghana", "India", "Ireland", "Italy", "Japan", "Kenya", "Mexico", "Nigeria",
    "Norway", "Peru", "Poland", "Spain", "Sweden", "Turkey", "USA",
)  # fmt: skip

ADJECTIVES = (
    "Amber", "Blue", "Bright", "Broken", "Crimson", "Dark", "Distant", "Early", "Electric",
    "Empty", "Endless", "Fading", "Final", "Frozen", "Gentle", "Golden", "Hidden", "Hollow",
    "Last", "Little", "Lonely", "Lost", "Midnight", "Quiet", "Restless", "Secret", "Silent",
    "Silver", "Simple", "Sudden", "Summer", "Wild", "Winter",
)  # fmt: skip

NOUNS = (
    "Bridge", "City", "Dance", "Dream", "Echo", "Fire", "Garden", "Harbor", "Heart", "Hill",
    "Horizon", "Island", "Journey", "Lake", "Light", "Mirror", "Moon", "Mountain", "Night",
    "Ocean", "Road", "River", "Rose", "Shadow", "Signal", "Sky", "Song", "Star", "Storm",
    "Stone", "Tide", "Tower", "Valley", "Voice", "Wave", "Wind",
)  # fmt: skip

PLACE_SUFFIXES = (
    "Central", "East", "Gardens", "Grand", "Harbor", "Heights", "Hill", "Park", "Plaza",
    "Point", "Square", "West",
)  # fmt: skip

GENRES = ("blues", "classical", "country", "electronic", "folk", "hip hop", "jazz", "metal",
          "pop", "reggae", "rock", "soul")  # fmt: skip
MAJORS = ("biology", "chemistry", "economics", "history", "law", "mathematics", "music",
          "physics", "psychology", "statistics")  # fmt: skip
DEPARTMENTS = ("Arts", "Business", "Engineering", "Law", "Medicine", "Science")
SPECIALTIES = ("cardiology", "dermatology", "neurology", "oncology", "pediatrics",
               "psychiatry", "radiology", "surgery")  # fmt: skip
POSITIONS = ("defender", "forward", "goalkeeper", "midfielder")
PRODUCT_CATEGORIES = ("books", "clothing", "electronics", "food", "furniture", "garden",
                      "sports", "toys")  # fmt: skip
CUISINES = ("Chinese", "French", "Greek", "Indian", "Italian", "Japanese", "Mexican", "Thai")
JOB_ROLES = ("analyst", "designer", "engineer", "manager", "researcher", "technician")
DEPT_NAMES = ("Finance", "Legal", "Marketing", "Operations", "Research", "Sales", "Support")
SPECIES = ("bear", "elephant", "giraffe", "gorilla", "kangaroo", "lion", "penguin", "tiger",
           "wolf", "zebra")  # fmt: skip
ANIMAL_NAMES = ("Bella", "Coco", "Daisy", "Ginger", "Kiki", "Luna", "Max", "Milo", "Nala",
                "Oreo", "Pepper", "Rex", "Rocky", "Simba", "Toby", "Ziggy")  # fmt: skip
MOVIE_GENRES = ("action", "animation", "comedy", "documentary", "drama", "horror",
                "romance", "thriller")  # fmt: skip
AIRCRAFT = ("A220", "A320", "A350", "B737", "B777", "B787", "E190")
