"""Write examples/houses.csv: a small table with known truth for the CLI example.

The price depends on area, rooms, neighbourhood (categorical), age and garden; the
door colour and the lucky number are noise. Some cells are missing on purpose.

    python examples/make_houses.py [OUTPUT.csv]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def houses(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 200, n).round(1)
    rooms = np.clip((area / 30 + rng.normal(0, 1, n)).round(), 1, 8).astype(int)
    neighbourhood = rng.choice(["old town", "harbour", "hills", "suburbs"], n)
    age = rng.integers(0, 100, n)
    garden = rng.choice(["yes", "no"], n)
    premium = pd.Series(neighbourhood).map({"old town": 90, "harbour": 60, "hills": 30, "suburbs": 0}).to_numpy()
    price = 2.2 * area + 12 * rooms + premium - 0.6 * age + 25 * (garden == "yes") + rng.normal(0, 15, n)
    frame = pd.DataFrame(
        {
            "area_m2": area,
            "rooms": rooms,
            "neighbourhood": neighbourhood,
            "age_years": age,
            "garden": garden,
            "door_colour": rng.choice(["red", "green", "blue", "white"], n),
            "lucky_number": rng.integers(0, 100, n),
            "price_k": price.round(1),
        }
    )
    frame.loc[rng.choice(n, 8, replace=False), "area_m2"] = np.nan  # a few missing values
    frame.loc[rng.choice(n, 5, replace=False), "neighbourhood"] = np.nan
    return frame


if __name__ == "__main__":
    import sys

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("houses.csv")
    houses().to_csv(path, index=False)
    print(f"wrote {path}")
