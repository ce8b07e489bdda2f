import type { Rollout } from '../contracts/records.ts';

/**
 * The demo's free-text rollouts: word problems answered in prose, three answers each —
 * `original`, `paraphrase` (the original's reasoning said again in other words: what a policy
 * sampled twice produces, and what word-shingle MinHash does not see) and `distinct` (the same
 * answer reached another way: not a duplicate). Written by hand for the demo, not generated:
 * the paraphrases share meaning, not wording.
 */
export interface Explained {
  skill: 'addition' | 'multiplication' | 'subtraction';
  question: string;
  answer: number;
  original: string;
  paraphrase: string;
  distinct: string;
}

export const EXPLAINED: readonly Explained[] = [
  {
    skill: 'addition',
    question: 'A library received 128 new books in March and 97 in April. How many new books arrived in the two months?',
    answer: 225,
    original: 'The library got 128 books in March and another 97 in April, so the total is the sum of the two months: 128 plus 97 makes 225 books.',
    paraphrase: 'Adding up both deliveries — March brought 128 volumes, April brought 97 more — gives 225 newly arrived books altogether.',
    distinct: 'Round 97 up to 100 to make it easy: 128 + 100 = 228, then take back the 3 we added, leaving 225.',
  },
  {
    skill: 'addition',
    question: 'Maria walked 3.5 km to the market and 2.5 km back by a shorter road. How far did she walk?',
    answer: 6,
    original: 'She walked 3.5 km one way and 2.5 km on the way back, so the whole walk is 3.5 + 2.5, which comes to 6 km.',
    paraphrase: 'Her trip there was 3.5 km and the return was 2.5 km; together she covered 6 km on foot.',
    distinct: 'Write both in metres: 3500 m and 2500 m. Their sum is 6000 m, which is 6 km.',
  },
  {
    skill: 'addition',
    question: 'A farmer has 45 sheep, buys 18 at a fair and is given 7 by a neighbour. How many sheep does the farmer have now?',
    answer: 70,
    original: 'Start with the 45 sheep the farmer owns, add the 18 bought at the fair to get 63, then add the neighbour’s 7 gift animals: 70 sheep.',
    paraphrase: 'The flock began at 45; the 18 purchased animals bring it to 63, and the 7 given by the neighbour raise it to 70.',
    distinct: 'Group the additions first: 18 and 7 are 25 new animals. Forty-five plus twenty-five is an even 70.',
  },
  {
    skill: 'addition',
    question: 'A bus carries 36 passengers; 14 get on at the first stop and 9 at the second. How many are on board?',
    answer: 59,
    original: 'There are 36 passengers at the start. After 14 board at the first stop there are 50, and 9 more at the second stop make 59 people on the bus.',
    paraphrase: 'There were 36 riders to begin with; 14 join, giving 50, and 9 further boarders at the next stop bring the count to 59.',
    distinct: 'Tally the stops as columns: tens 3 + 1 = 4, ones 6 + 4 + 9 = 19. Forty plus nineteen is 59.',
  },
  {
    skill: 'addition',
    question: 'A recipe needs 250 g of flour for the dough and 75 g for dusting. How much flour is needed in all?',
    answer: 325,
    original: 'The dough takes 250 grams and dusting the table takes 75 grams, so the recipe uses 250 + 75 = 325 grams of flour in total.',
    paraphrase: 'You need 250 g for the dough itself plus 75 g sprinkled on the work surface, which is 325 g of flour overall.',
    distinct: 'Seventy-five grams is three quarters of a hundred, so the bag must hold two and a half hundreds plus three quarters: 325.',
  },
  {
    skill: 'addition',
    question: 'Tom saved 12 euros in January, 19 in February and 24 in March. How much did he save?',
    answer: 55,
    original: 'Tom put away 12 euros, then 19, then 24. Twelve plus nineteen is thirty-one, and thirty-one plus twenty-four is 55 euros saved.',
    paraphrase: 'Over the three months his savings were 12, 19 and 24 euros; summing them month by month gives a total of 55 euros.',
    distinct: 'Pair 19 with 24 first: that is 43. Add January’s 12 and the jar holds 55.',
  },
  {
    skill: 'multiplication',
    question: 'A theatre has 24 rows with 18 seats in each row. How many seats are there?',
    answer: 432,
    original: 'Every one of the 24 rows holds 18 seats, so the number of seats is 24 times 18, which is 432.',
    paraphrase: 'With 18 chairs per row and 24 rows, multiplying the two gives 432 places in the hall.',
    distinct: 'Split 18 into 20 − 2: 24 × 20 = 480 and 24 × 2 = 48, and 480 − 48 = 432.',
  },
  {
    skill: 'multiplication',
    question: 'A box holds 12 eggs. How many eggs are in 15 boxes?',
    answer: 180,
    original: 'Each box contains a dozen eggs, and there are 15 boxes, so there are 15 × 12 = 180 eggs.',
    paraphrase: 'There are 15 cartons with 12 eggs apiece; multiplying them, we get 180 eggs.',
    distinct: 'Ten boxes are 120 eggs and five more boxes are half of that, 60; so 120 + 60 = 180.',
  },
  {
    skill: 'multiplication',
    question: 'A cyclist rides at 16 km per hour for 3 hours. How far does she travel?',
    answer: 48,
    original: 'Distance is speed multiplied by time: 16 kilometres each hour for 3 hours is 48 kilometres.',
    paraphrase: 'Going 16 km every hour, after 3 hours of riding she has covered 48 km.',
    distinct: 'Hour by hour the odometer reads 16, then 32, then 48, so the ride ends 48 km away.',
  },
  {
    skill: 'multiplication',
    question: 'A garden bed is 7 m long and 9 m wide. What is its area in square metres?',
    answer: 63,
    original: 'The area of a rectangle is its length times its width, so 7 metres by 9 metres gives 63 square metres.',
    paraphrase: 'Multiplying the bed’s length of 7 m by its 9 m width, we find 63 square metres of soil.',
    distinct: 'Picture it as 9 strips one metre wide and 7 long: nine sevens are 63.',
  },
  {
    skill: 'multiplication',
    question: 'Pencils cost 35 cents each. What do 8 pencils cost in cents?',
    answer: 280,
    original: 'Eight pencils at 35 cents apiece cost 8 × 35 = 280 cents.',
    paraphrase: 'At 35 cents per pencil, buying 8 of them comes to 280 cents.',
    distinct: 'Two pencils are 70 cents, so four pairs are 4 × 70 = 280.',
  },
  {
    skill: 'multiplication',
    question: 'A printer prints 25 pages per minute. How many pages does it print in 14 minutes?',
    answer: 350,
    original: 'It prints 25 pages every minute, so in 14 minutes it produces 25 × 14 = 350 pages.',
    paraphrase: 'Running for 14 minutes at 25 sheets a minute, the machine turns out 350 sheets.',
    distinct: 'Four minutes make 100 pages, so twelve minutes make 300, and the last two add 50: 350.',
  },
  {
    skill: 'subtraction',
    question: 'A shop had 500 apples and sold 173 of them. How many apples are left?',
    answer: 327,
    original: 'The shop began with 500 apples and sold 173, so what remains is 500 minus 173, which is 327 apples.',
    paraphrase: 'Taking the 173 sold apples away from the original 500 leaves 327 in stock.',
    distinct: 'Count up from 173: 27 more reaches 200 and another 300 reaches 500, so 27 + 300 = 327.',
  },
  {
    skill: 'subtraction',
    question: 'A film lasts 142 minutes and Ana has watched 87. How many minutes are left?',
    answer: 55,
    original: 'Ana still has to watch the part of the 142-minute film she has not seen: 142 − 87 = 55 minutes remain.',
    paraphrase: 'Of the movie’s 142 minutes she has seen 87, so 55 minutes are still to come.',
    distinct: 'From 87 to 100 is 13 minutes, and from 100 to 142 is 42 more; 13 + 42 = 55.',
  },
  {
    skill: 'subtraction',
    question: 'The temperature was 12 degrees at noon and fell by 19 degrees overnight. What was it in the morning?',
    answer: -7,
    original: 'Starting at 12 degrees and dropping 19 degrees, the temperature ends at 12 − 19 = −7 degrees.',
    paraphrase: 'A fall of 19 degrees from a midday 12 takes the thermometer below zero, to −7.',
    distinct: 'The first 12 degrees of the drop bring it to zero; the other 7 take it to seven below.',
  },
  {
    skill: 'subtraction',
    question: 'A tank holds 1000 litres and 365 litres have been drained. How much water is left?',
    answer: 635,
    original: 'The tank started full with 1000 litres. After draining 365 litres, 1000 − 365 = 635 litres are still inside.',
    paraphrase: '365 litres were let out of a 1000-litre tank, leaving 635 litres of water.',
    distinct: 'Take 999 − 365 = 634 with no borrowing, then add back the 1 we shaved off: 635.',
  },
  {
    skill: 'subtraction',
    question: 'Leo is 154 cm tall and his sister is 118 cm. How much taller is Leo?',
    answer: 36,
    original: 'The difference in height is Leo’s 154 cm minus his sister’s 118 cm, so Leo is 36 cm taller.',
    paraphrase: 'Comparing the two heights, 154 cm against 118 cm, Leo stands 36 cm above her.',
    distinct: 'Add to 118 until you reach 154: 2 gets to 120, 34 more gets to 154, so the gap is 36.',
  },
  {
    skill: 'subtraction',
    question: 'A train has 320 seats and 248 are booked. How many seats are free?',
    answer: 72,
    original: 'Of the 320 seats, 248 are taken, so the free seats number 320 − 248 = 72.',
    paraphrase: 'Subtracting the 248 reservations from 320 places leaves 72 open seats.',
    distinct: 'Booked seats fall 2 short of 250, and 320 − 250 = 70; adding those 2 back gives 72.',
  },
];

/** Which of a problem's answers a rollout carries. */
export type ExplainedFate = 'original' | 'paraphrase' | 'distinct';

/**
 * The problems as rollouts of run `runId`, tagged `source: 'explanations'` (the demo's
 * semantic-dedupe step embeds only these), one group per problem, in the order original,
 * distinct, paraphrase — so the paraphrase meets a remembered original. Each response ends
 * with "Answer: <n>", like the demo's arithmetic rollouts; all are right.
 */
export function explainedRollouts(runId: string, start: number): { rollouts: Rollout[]; fates: Map<string, ExplainedFate> } {
  const rollouts: Rollout[] = [];
  const fates = new Map<string, ExplainedFate>();
  EXPLAINED.forEach((p, g) => {
    const promptId = `${runId}-p${g}`;
    (['original', 'distinct', 'paraphrase'] as const).forEach((fate, s) => {
      const response = `${p[fate]}\nAnswer: ${p.answer}`;
      const id = `${promptId}-s${s}`;
      rollouts.push({
        id,
        run_id: runId,
        prompt_id: promptId,
        prompt: p.question,
        group_id: promptId,
        response,
        steps: [],
        model_name: 'synthetic-policy',
        model_version: 'v1',
        rewards: { correct: 1 },
        logprobs: null,
        token_count: response.split(/\s+/).length,
        created_at: start + (g * 3 + s) * 1000,
        tags: { skill: p.skill, source: 'explanations' },
      });
      fates.set(id, fate);
    });
  });
  return { rollouts, fates };
}
